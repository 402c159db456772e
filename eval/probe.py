"""The Megatron source adapter: one forward pass per microbatch of our GPTModel, its residual
stream h_0..h_L (forward hooks on the transformer layers: h_0 is layer 1's input, h_l layer l's
output, both before the final norm), its own LM loss and its head (final norm + output layer),
handed to the shared statistics (``eval.stats.Stats``).

Megatron activations are [s, b, h]; they are viewed as [b, s, h] for ``Stats`` (the order of
labels and loss masks). The logit lens of layer l is ``output_layer(final_norm(h_l))``; at l = L
this is the model's own output.
"""

from __future__ import annotations

import torch
from megatron.core.transformer.transformer_layer import TransformerLayer

from eval.activations import VOID_ALPHA
from eval.stats import Stats


class Probe(Stats):
    """``Stats`` fed by a Megatron GPTModel (see ``Stats`` for the arguments)."""

    def __init__(
        self,
        num_layers: int,
        layer_weights: torch.Tensor,
        reg: str,
        alpha: float = VOID_ALPHA,
        massive: bool = False,
        buckets: torch.Tensor | None = None,
    ):
        super().__init__(num_layers, layer_weights, reg, alpha, massive, buckets)

    @torch.no_grad()
    def add_batch(self, model, batch: dict[str, torch.Tensor]) -> None:
        """Run one microbatch through ``model`` (eval mode) and add its measurements."""
        captured: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

        def hook(module, args, kwargs, output):
            h_in_sbh = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            captured[module.layer_number] = (h_in_sbh, output[0])

        layers = [m for m in model.modules() if isinstance(m, TransformerLayer)]
        handles = [layer.register_forward_hook(hook, with_kwargs=True) for layer in layers]
        try:
            loss_bs = model(batch["tokens"], batch["position_ids"], None, labels=batch["labels"])
        finally:
            for handle in handles:
                handle.remove()
        if sorted(captured) != list(range(1, self.num_layers + 1)):
            raise RuntimeError(
                f"hooks saw layers {sorted(captured)}, expected 1..{self.num_layers}"
            )
        hidden_sbh = [captured[1][0]] + [captured[i][1] for i in range(1, self.num_layers + 1)]
        norm, output_layer = model.decoder.final_layernorm, model.output_layer

        def head(h_nh):
            logits, _ = output_layer(norm(h_nh.unsqueeze(1)))
            return logits.squeeze(1)

        hidden_bsh = [h.transpose(0, 1) for h in hidden_sbh]
        self.add(hidden_bsh, head, batch["labels"], batch["loss_mask"], loss_bs)
