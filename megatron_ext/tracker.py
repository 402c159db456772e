"""Per-layer jump metrics recorded during the step and reduced once per logging step.

Modelled on megatron-core's ``moe_logging.MoEMetricsTracker``: a fixed ``[num_layers]`` buffer per
split, filled by each layer with detached device tensors (no ``.item()``, no host sync inside the
step), and one collective at report time in which every rank takes part, whatever layers it
holds, so no pipeline stage can hang the others.

Reduction: each rank adds ``(sum of psi means, sum of reg means, count)`` for its own layers and
microbatches; one SUM over all ranks (PP stages fill disjoint layers; TP/SP, CP and DP replicas
add to the same layers) and a division by the count give, per layer, the mean over microbatches
and ranks of the local token means, i.e. the global token mean when shards are equal in size.
The LM loss (token sum and count, added by the last stage's loss function) rides in the same
buffer, so a logging step costs one all-reduce.
"""

from __future__ import annotations

import torch

from megatron_ext import dist
from megatron_ext.metrics import convergence_score, jump_rate, jump_ratio

_PSI, _REG, _COUNT = 0, 1, 2


class JumpTracker:
    """Accumulates D_l (mean Psi per layer), the regulariser's per-layer mean and the LM loss.

    Args:
        num_layers: total layers across all pipeline stages (layer numbers are global, 1-based).
        weights: the layer weights w_l (for ``jreg/loss``).
        lam: lambda (for ``jreg/loss_scaled``); pass 0 when nothing is attached.
        device: where the buffers live (the GPU under NCCL, CPU under gloo).
    """

    def __init__(self, num_layers: int, weights: torch.Tensor, lam: float, device=None):
        self.num_layers = num_layers
        self.weights = weights.double().cpu()
        self.lam = float(lam)
        self.device = torch.device("cpu") if device is None else torch.device(device)
        # per split: [3 * num_layers + 2] = psi sums | reg sums | counts | lm-loss sum, tokens
        self._buffers: dict[str, torch.Tensor] = {}
        self._sealed: list[torch.Tensor] = []  # finished evaluation passes, not yet reported

    @classmethod
    def from_config(cls, cfg, device=None) -> JumpTracker:
        """Tracker for a ``JregConfig`` (``jreg/loss_scaled`` is 0 when nothing is attached)."""
        return cls(cfg.num_layers, cfg.weights, cfg.lam if cfg.active else 0.0, device)

    def _buffer(self, split: str) -> torch.Tensor:
        if split not in self._buffers:
            size = 3 * self.num_layers + 2
            self._buffers[split] = torch.zeros(size, dtype=torch.float64, device=self.device)
        return self._buffers[split]

    def _layers(self, split: str) -> torch.Tensor:
        return self._buffer(split)[: 3 * self.num_layers].view(3, self.num_layers)

    def record(
        self,
        layer_number: int,
        psi_mean: torch.Tensor,
        reg_mean: torch.Tensor | None = None,
        training: bool = True,
    ) -> None:
        """Add one microbatch's token means for a layer (``reg_mean`` defaults to ``psi_mean``)."""
        split = "train" if training else "valid"
        buf = self._layers(split)
        i = layer_number - 1
        reg = psi_mean if reg_mean is None else reg_mean
        buf[_PSI, i] += psi_mean.detach().to(buf.device, buf.dtype)
        buf[_REG, i] += reg.detach().to(buf.device, buf.dtype)
        buf[_COUNT, i] += 1

    def record_lm_loss(self, loss_sum: torch.Tensor, num_tokens: torch.Tensor, training: bool):
        """Add a microbatch's LM loss (sum over its tokens) and token count."""
        tail = self._buffer("train" if training else "valid")[3 * self.num_layers :]
        tail[0] += loss_sum.detach().to(tail.device, tail.dtype)
        tail[1] += num_tokens.detach().to(tail.device, tail.dtype)

    def num_records(self, split: str = "train") -> list[int]:
        """Records per layer on this rank since the last report (host sync: tests only)."""
        return [int(c) for c in self._layers(split)[_COUNT].tolist()]

    def seal(self, split: str = "valid") -> None:
        """Close one evaluation pass: its records are kept apart from the next pass's (no sync)."""
        self._sealed.append(self._buffer(split).clone())
        self._buffers[split].zero_()

    def report_sealed(self, group=None) -> list[dict[str, float]]:
        """Reduce every sealed pass, oldest first (one collective per pass; every rank calls)."""
        sealed, self._sealed = self._sealed, []
        return [self._summarise(buf, group) for buf in sealed]

    def report(self, split: str = "train", group=None) -> dict[str, float]:
        """Reduce ``split`` across ranks (collective: every rank must call), clear it, summarise.

        Returns an empty dict when no rank recorded anything for ``split``.
        """
        buf = self._buffer(split).clone()
        self._buffers[split].zero_()
        return self._summarise(buf, group)

    def _summarise(self, buf: torch.Tensor, group) -> dict[str, float]:
        buf = dist.all_reduce_sum(buf, group).cpu()
        sums = buf[: 3 * self.num_layers].view(3, self.num_layers)
        counts = sums[_COUNT]
        if counts.sum() == 0:
            return {}
        means = sums[:_COUNT] / counts  # NaN where a layer saw nothing: reported, not hidden
        d = means[_PSI]
        reg_loss = float((self.weights * means[_REG]).sum())
        out = {"jreg/loss": reg_loss, "jreg/loss_scaled": self.lam * reg_loss}
        out.update({f"jump/D_{i + 1:02d}": float(v) for i, v in enumerate(d)})
        if self.num_layers >= 2:
            out["jump/ratio"] = jump_ratio(d)
            out["jump/zeta_L"] = jump_rate(d)
        out["jump/S_model"] = convergence_score(d)
        loss_sum, tokens = buf[3 * self.num_layers :].tolist()
        if tokens > 0:
            out["lm_loss"] = loss_sum / tokens
        return out

    @staticmethod
    def layer_values(report: dict[str, float]) -> list[float]:
        """The D_l list from a report, in layer order."""
        return [report[k] for k in sorted(k for k in report if k.startswith("jump/D_"))]
