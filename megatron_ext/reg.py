"""Attaching the JREG loss to the residual stream, per layer, on every pipeline stage.

Each transformer layer computes its own term lambda * w_l * mean(Psi_l) and hangs it on its
output through ``_AttachLoss`` (the pattern of Megatron's ``MoEAuxLossAutoScaler``): the forward
returns the output unchanged and the backward injects d(term)/d(term) = loss_scale into the term's
graph when autograd reaches that activation. No loss value crosses pipeline stages.

``loss_scale`` follows the schedule: megatron-core's ``forward_step_calc_loss`` calls
``TransformerConfig.experimental_attention_variant_loss_scale_func`` after every microbatch with
``grad_scale * cp / num_microbatches`` (or ``grad_scale`` with per-token loss); ``JregRuntime``
registers ``set_loss_scale`` there, so no module-level constant decides the scale.
"""

from __future__ import annotations

import torch

from megatron_ext import regularizers
from megatron_ext.regconfig import JregConfig


class _AttachLoss(torch.autograd.Function):
    """Return ``out`` unchanged; in backward, seed ``aux``'s graph with the schedule's scale."""

    @staticmethod
    def forward(ctx, out: torch.Tensor, aux: torch.Tensor, runtime: JregRuntime) -> torch.Tensor:
        ctx.runtime = runtime
        ctx.save_for_backward(aux)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (aux,) = ctx.saved_tensors
        return grad_out, ctx.runtime.loss_scale_like(aux), None


def _in_backward() -> bool:
    """True while autograd runs a backward pass, i.e. in the recompute pass of full activation
    recompute (the first pass ran under no_grad, the second runs inside backward)."""
    return torch._C._current_graph_task_id() != -1


class JregRuntime:
    """Per-process state shared by all JREG layers of a model: config, scale, tracker.

    Args:
        cfg: the regulariser.
        tracker: where per-layer displacements are recorded (None: no logging).
        sequence_parallel: tokens are split across the TP ranks (each sees s / tp).
        tp_size: tensor-parallel size.
        cp_size: context-parallel size (each rank sees s / cp tokens).
        per_token_loss: Megatron's ``calculate_per_token_loss`` (the schedule does not divide by
            tokens or microbatches; finalize_model_grads divides by the global token count).
    """

    def __init__(
        self,
        cfg: JregConfig,
        tracker=None,
        *,
        sequence_parallel: bool = False,
        tp_size: int = 1,
        cp_size: int = 1,
        per_token_loss: bool = False,
    ):
        self.cfg = cfg
        self.tracker = tracker
        self.per_token_loss = per_token_loss
        # Mean over local tokens -> share of the global mean: the global mean is the average of
        # the ranks' local means over TP (only when SP splits tokens) and CP. The schedule already
        # multiplies by cp (see module docstring), which this divides back out.
        self.token_share = 1.0 / ((tp_size if sequence_parallel else 1) * cp_size)
        self._loss_scale: torch.Tensor | None = None
        self._weights = [float(w) for w in cfg.weights]
        self._psi = regularizers.get(regularizers.PSI)  # D_l, whatever the regulariser
        self.collector = None
        """REG=selfdistill: gets every layer's input and output (``selfdistill_train``)."""

    def set_loss_scale(self, scale: torch.Tensor) -> None:
        """The schedule's hook (``config.experimental_attention_variant_loss_scale_func``)."""
        scale = scale.detach().reshape(())
        if self._loss_scale is None or self._loss_scale.device != scale.device:
            self._loss_scale = scale.clone()
        else:
            self._loss_scale.copy_(scale)  # in place: stays valid under CUDA graphs

    def loss_scale_like(self, aux: torch.Tensor) -> torch.Tensor:
        """The current scale as a tensor like ``aux`` (1 if the schedule never set one)."""
        if self._loss_scale is None:
            return torch.ones_like(aux)
        return self._loss_scale.to(aux.dtype).expand_as(aux)

    def aux_term(self, layer_number: int, reg_sb: torch.Tensor) -> torch.Tensor:
        """lambda * w_l * (this rank's share of) the token mean of a per-token regulariser."""
        scale = self.cfg.lam * self._weights[layer_number - 1]
        if self.per_token_loss:
            return reg_sb.sum() * scale
        return reg_sb.mean() * (scale * self.token_share)

    def apply(
        self, layer_number: int, h_in_sbh: torch.Tensor, h_out_sbh: torch.Tensor, training: bool
    ) -> torch.Tensor:
        """Record D_l and attach the loss term to ``h_out_sbh``; returns the (new) output."""
        attach = self.cfg.active and training and torch.is_grad_enabled()
        record = self.tracker is not None and not _in_backward()
        if self.collector is not None and not _in_backward():
            self.collector.collect(layer_number, h_in_sbh, h_out_sbh)
        if not (attach or record):
            return h_out_sbh
        shared = self.cfg.reg_is_psi
        with torch.set_grad_enabled(attach and shared):
            psi_sb = self._psi(h_in_sbh, h_out_sbh)
        reg_sb = psi_sb
        if not shared:
            with torch.set_grad_enabled(attach):
                reg_sb = self.cfg.regularizer(h_in_sbh, h_out_sbh)
        if record:
            reg_mean = None if shared else reg_sb.detach().mean()
            self.tracker.record(layer_number, psi_sb.detach().mean(), reg_mean, training)
        if not attach:
            return h_out_sbh
        return _AttachLoss.apply(h_out_sbh, self.aux_term(layer_number, reg_sb), self)
