"""One forward pass per microbatch, everything measured from it: LM loss, the residual stream
h_0..h_L (forward hooks on the transformer layers: h_0 is layer 1's input, h_l layer l's output,
both before the final norm), per-layer displacements and the logit lens.

The displacement and its summaries are the training code's own functions
(``megatron_ext.jreg.displacement``/``relative_l2``, ``megatron_ext.metrics``) and are averaged the
way the training tracker averages them (the token mean of each microbatch, then the mean over
microbatches; the LM loss as a sum over unmasked tokens divided by their count), so a validation
pass measured here reproduces the ``metrics.jsonl`` line of the same checkpoint and batches.

Logit lens: layer l's prediction is ``output_layer(final_norm(h_l))``; at l = L this is the
model's own output. Voids and massive activations (``eval.activations``) are measured on every
token position (loss mask ignored): voids streamed per microbatch, massive activations over the
whole sample set, which keeps |h_0|..|h_L| of every token on the CPU (samples x seq x hidden x
(L+1) x 4 bytes: 21 MB for 64 sequences of the tiny model) and so is switched on only for the
held-out sample. Shapes: ``_sbh`` = Megatron's [sequence, batch, hidden], ``_n*`` = tokens
flattened in [batch, sequence] order (the order of labels and loss masks).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from megatron.core.transformer.transformer_layer import TransformerLayer

from eval.activations import (
    VOID_ALPHA,
    active_layers,
    massive_activations,
    token_norms,
    void_summary,
)
from megatron_ext.jreg import displacement, relative_l2
from megatron_ext.metrics import convergence_score, jump_rate, jump_ratio

# Logit-lens chunk: about this many logits at once (fp32), whatever the vocabulary.
_LENS_LOGITS = 1 << 24
_LENS = ("loss", "acc", "kl_to_final", "agree_with_final")


class Probe:
    """Accumulates one sample set's measurements over microbatches.

    Args:
        num_layers: L.
        layer_weights: w_1..w_L of the run's regulariser (for ``jreg_loss``).
        reg: the run's regulariser (``l2rel`` weighs relative L2, else Psi), as the tracker does.
        alpha: the void threshold's alpha.
        massive: also measure massive activations (keeps every activation, see above).
    """

    def __init__(
        self,
        num_layers: int,
        layer_weights: torch.Tensor,
        reg: str,
        alpha: float = VOID_ALPHA,
        massive: bool = False,
    ):
        self.num_layers = num_layers
        self.alpha = alpha
        # |h_0|..|h_L| of every microbatch, for massive_activations over the whole sample set
        self.abs_hidden = [[] for _ in range(num_layers + 1)] if massive else None
        self.num_active = torch.zeros(num_layers, dtype=torch.float64)
        self.weights = layer_weights.double().cpu()
        self.reg = reg
        layers = num_layers + 1
        self.psi = torch.zeros(num_layers, dtype=torch.float64)
        self.rel = torch.zeros(num_layers, dtype=torch.float64)
        self.norm = torch.zeros(layers, dtype=torch.float64)
        self.lens = {k: torch.zeros(layers, dtype=torch.float64) for k in _LENS}
        self.num_microbatches = 0
        self.loss_sum = 0.0
        self.num_loss_tokens = 0.0
        self.num_tokens = 0
        self.num_sequences = 0

    @torch.no_grad()
    def add(self, model, batch: dict[str, torch.Tensor]) -> None:
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
        mask_bs = batch["loss_mask"].float()
        self.loss_sum += float((loss_bs.float() * mask_bs).sum().double())
        self.num_loss_tokens += float(mask_bs.sum())
        self.num_tokens += batch["tokens"].numel()
        self.num_sequences += batch["tokens"].shape[0]
        self.num_microbatches += 1

        hidden_sbh = [captured[1][0]] + [captured[i][1] for i in range(1, self.num_layers + 1)]
        for i in range(self.num_layers):
            a, b = hidden_sbh[i], hidden_sbh[i + 1]
            self.psi[i] += float(displacement(a, b).mean())
            self.rel[i] += float(relative_l2(a, b).mean())
        for i, h in enumerate(hidden_sbh):
            self.norm[i] += float(h.float().norm(dim=-1).mean())
            if self.abs_hidden is not None:
                self.abs_hidden[i].append(h.detach().float().abs().cpu())
        self.num_active += active_layers(token_norms(hidden_sbh), self.alpha).double().sum(0).cpu()
        self._lens(model, hidden_sbh, batch["labels"].reshape(-1), mask_bs.reshape(-1))

    def _lens(self, model, hidden_sbh, labels_n, mask_n) -> None:
        norm, output_layer = model.decoder.final_layernorm, model.output_layer

        def logprobs(h_nh):
            logits, _ = output_layer(norm(h_nh.unsqueeze(1)))
            return F.log_softmax(logits.squeeze(1).float(), dim=-1)

        flat_nh = [h.transpose(0, 1).reshape(-1, h.shape[-1]) for h in hidden_sbh]
        chunk = max(1, _LENS_LOGITS // model.vocab_size)
        for start in range(0, labels_n.numel(), chunk):
            sl = slice(start, start + chunk)
            mask, labels = mask_n[sl].double(), labels_n[sl]
            final = logprobs(flat_nh[-1][sl])
            final_top = final.argmax(-1)
            for i, h_nh in enumerate(flat_nh):
                lp = final if i == self.num_layers else logprobs(h_nh[sl])
                nll = -lp.gather(-1, labels[:, None]).squeeze(-1).double()
                kl = (final.exp() * (final - lp)).sum(-1).double()
                top = lp.argmax(-1)
                self.lens["loss"][i] += float((nll * mask).sum())
                self.lens["acc"][i] += float(((top == labels).double() * mask).sum())
                self.lens["kl_to_final"][i] += float((kl * mask).sum())
                self.lens["agree_with_final"][i] += float(
                    ((top == final_top).double() * mask).sum()
                )

    def summary(self) -> dict:
        """The sample set's metrics (JSON-ready)."""
        if not self.num_microbatches:
            raise RuntimeError("no microbatch was added")
        d = (self.psi / self.num_microbatches).tolist()
        rel = (self.rel / self.num_microbatches).tolist()
        reg_means = torch.tensor(rel if self.reg == "l2rel" else d, dtype=torch.float64)
        denom = max(self.num_loss_tokens, 1.0)
        lens = {k: (v / denom).tolist() for k, v in self.lens.items()}
        lens["ppl"] = [math.exp(x) if x < 700 else math.inf for x in lens["loss"]]
        out = {
            "num_sequences": self.num_sequences,
            "num_tokens": self.num_tokens,
            "lm_loss": self.loss_sum / denom,
            "D": d,
            "jump_ratio": jump_ratio(d) if self.num_layers >= 2 else float("nan"),
            "S_model": convergence_score(d),
            "zeta_L": jump_rate(d) if self.num_layers >= 2 else float("nan"),
            "jreg_loss": float((self.weights * reg_means).sum()),
            "rel_l2": rel,
            "hidden_norm": (self.norm / self.num_microbatches).tolist(),
            "lens": lens,
            "voids": void_summary(self.num_active, self.num_tokens, self.alpha),
        }
        if self.abs_hidden is not None:
            out["massive"] = self._massive()
        return out

    def _massive(self) -> dict:
        """Per residual state h_0..h_L, each statistic of ``massive_activations`` as a list."""
        per_state = [massive_activations(torch.cat([t.reshape(-1) for t in parts]))
                     for parts in self.abs_hidden]  # fmt: skip
        return {k: [x[k] for x in per_state] for k in per_state[0]}
