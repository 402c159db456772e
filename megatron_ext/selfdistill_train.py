"""``REG=selfdistill`` in training: collect h_0..h_L, compute the loss where the output layer is.

The loss (``megatron_ext.selfdistill``) is not a per-layer plug-in: zeta_1 projects every layer's
hidden state through the model's final norm and output layer. So each JREG layer hands its input
and output to ``SelfDistillRuntime.collect`` (through ``JregRuntime.collector``, the hook where
D_l is measured), and the forward step, once the model has returned its per-token LM loss, calls
``attach``: it computes lambda * (zeta_1 + alpha * zeta_2) from the collected states and hangs
it on the model's output with JREG's ``_AttachLoss`` (backward seeds it with the schedule's loss
scale, grad_scale / num_microbatches, as the LM loss gets), then drops the states.

The loss value is the same on every TP rank (the lens's log-sum-exp is all-reduced over the
vocabulary shards, and under SP over all tokens of the microbatch), as Megatron's LM loss is;
``finalize_model_grads`` sums the SP norm's gradient parts and DP averages, as for the LM loss.
With ``SD_TEACHER=frozen`` the target is the frozen teacher's (``megatron_ext.sd_teacher``, built
at the first microbatch, when Megatron's process groups exist). What it cannot run on (PP > 1,
CP > 1, full recompute, a frozen teacher without INIT=) is refused before the start
(``megatron_ext.sd_settings.refusal``).
"""

from __future__ import annotations

import torch
from megatron.core.utils import make_viewless_tensor

from megatron_ext.reg import JregRuntime, _AttachLoss
from megatron_ext.selfdistill import selfdistill_loss


def _unwrap(model):
    while hasattr(model, "module"):
        model = model.module
    return model


def lens_head(gpt) -> tuple:
    """The model's final norm, the output layer's weight ([vocab / tp, h]) and the TP group."""
    if gpt.share_embeddings_and_output_weights:
        weight = gpt.shared_embedding_or_output_weight()
    else:
        weight = gpt.output_layer.weight
    return gpt.decoder.final_layernorm, weight, gpt.pg_collection.tp


class SelfDistillRuntime:
    """Per-process state of REG=selfdistill: the current microbatch's h_0..h_L and the tracker.

    Args:
        jreg: the JREG runtime (its config's ``selfdistill``, ``lam``; its loss scale); this
            registers itself as its ``collector``.
        tracker: where zeta_1, zeta_2 and the per-layer KL are recorded (None: no logging).
        sequence_parallel: the hidden states hold this rank's s / tp tokens.
        per_token_loss: Megatron's ``calculate_per_token_loss`` (the term is then the token mean
            times the microbatch's tokens, as the LM loss is a token sum).
        teacher_factory: ``SD_TEACHER=frozen``: builds the teacher from the student's
            ``GPTModel`` (``megatron_ext.sd_teacher.FrozenTeacher``); None: the self teacher.
    """

    def __init__(self, jreg: JregRuntime, tracker=None, *, sequence_parallel=False,
                 per_token_loss=False, teacher_factory=None):  # fmt: skip
        self.jreg = jreg
        self.cfg = jreg.cfg.selfdistill
        self.lam = float(jreg.cfg.lam)
        self.tracker = tracker
        self.sequence_parallel = sequence_parallel
        self.per_token_loss = per_token_loss
        self.hiddens: list[torch.Tensor] = []
        self.teacher_factory = teacher_factory
        self.teacher = None
        jreg.collector = self

    def collect(self, layer_number: int, h_in: torch.Tensor, h_out: torch.Tensor) -> None:
        """A layer's input (layer 1 only: h_0) and output."""
        if layer_number == 1:
            self.hiddens = [h_in]
        if len(self.hiddens) != layer_number:
            raise RuntimeError(
                f"selfdistill: layer {layer_number} ran after {len(self.hiddens) - 1} layers; "
                "the layers of one microbatch must run in order on one stage (PP=1)"
            )
        self.hiddens.append(h_out)

    def attach(self, output: torch.Tensor, model, training: bool, batch=None) -> torch.Tensor:
        """Compute the loss of the collected states, record its metrics, attach it to
        ``output`` (training with grad and lambda > 0) and drop the states. ``batch``: the
        microbatch (``tokens``, ``position_ids``), which a frozen teacher reads."""
        hiddens, self.hiddens = self.hiddens, []
        if len(hiddens) != self.jreg.cfg.num_layers + 1:  # e.g. layers run as CUDA graphs
            raise RuntimeError(
                f"selfdistill: {len(hiddens)} hidden states collected, expected h_0..h_"
                f"{self.jreg.cfg.num_layers}; the layers' hook did not run (CUDA graphs?)"
            )
        gpt = _unwrap(model)
        norm, weight, group = lens_head(gpt)
        target = None
        if self.teacher_factory is not None:
            if self.teacher is None:
                self.teacher = self.teacher_factory(gpt)
            target = self.teacher.target(batch)
        grad = training and torch.is_grad_enabled() and self.lam > 0
        with torch.set_grad_enabled(grad):
            loss, metrics = selfdistill_loss(
                hiddens, norm, weight, self.cfg, target=target, group=group,
                sp=self.sequence_parallel,
            )  # fmt: skip
        if self.tracker is not None:
            self.tracker.record_metric("zeta_1", metrics["zeta_1"], training=training)
            self.tracker.record_metric("zeta_2", metrics["zeta_2"], training=training)
            for layer, kl in enumerate(metrics["kl"]):
                self.tracker.record_metric("KL", kl, layer=layer, training=training)
        if not grad:
            return output
        term = self.lam * loss
        if self.per_token_loss:
            tp = torch.distributed.get_world_size(group) if self.sequence_parallel else 1
            term = term * (hiddens[0].shape[0] * hiddens[0].shape[1] * tp)
        out = _AttachLoss.apply(output, term, self.jreg)
        return make_viewless_tensor(out, requires_grad=True, keep_graph=True)
