"""Named metrics recorded during the step and reduced once per logging step.

Modelled on megatron-core's ``moe_logging.MoEMetricsTracker``: each split has one flat float64
buffer with a fixed slot per declared metric (and per layer for per-layer metrics), filled with
detached device tensors (no ``.item()``, no host sync inside the step), and one collective at
report time in which every rank takes part, whatever layers it holds, so no pipeline stage can
hang the others.

Each metric declares how it reduces over microbatches and ranks (``megatron_ext.metrics.Metric``):

- ``sum``: the sum of every record on every rank (TP/CP/DP replicas each add theirs);
- ``mean``: sum of values / sum of weights (weight 1 per record by default; the LM loss records
  its token sum with the token count as weight). Per layer, PP stages fill disjoint layers and
  TP/SP, CP and DP replicas add to the same ones, so D_l is the mean over microbatches and ranks
  of the local token means, i.e. the global token mean when shards are equal in size;
- ``max`` / ``min``: the extreme over records and ranks.

``sum`` and ``mean`` slots reduce with one all-reduce SUM. When a ``max``/``min`` metric is
declared, the collective is one all-gather of the buffers instead (each rank then reduces the
gathered rows itself), so a logging step still costs one collective.
"""

from __future__ import annotations

import math

import torch

from megatron_ext import dist
from megatron_ext.metrics import (
    METRICS,
    SELFDISTILL_KEYS,
    Metric,
    from_scalars,
    summarise,
    to_scalars,
)

REDUCE_OPS = ("sum", "mean", "max", "min")
_FILL = {"sum": 0.0, "mean": 0.0, "max": -math.inf, "min": math.inf}


class MetricBuffers:
    """Declared metrics packed into one flat buffer per split; ``reduce`` is the one collective.

    Args:
        metrics: the metrics (``reduce`` set), their names unique.
        num_layers: slots of a per-layer metric (layer numbers are global, 1-based; L + 1 slots,
            0-based, for a ``from_input`` metric).
        device: where the buffers live (the GPU under NCCL, CPU under gloo).
    """

    def __init__(self, metrics: list[Metric], num_layers: int, device=None):
        self.num_layers = num_layers
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.metrics = {m.key: m for m in metrics}
        self._offset: dict[str, int] = {}
        fill: list[float] = []
        for m in metrics:
            if m.reduce not in REDUCE_OPS:
                raise ValueError(
                    f"metric {m.key}: reduce must be one of {REDUCE_OPS}, got {m.reduce!r}"
                )
            width = self._width(m)
            self._offset[m.key] = len(fill)
            # a mean keeps (values | weights); the others one slot per value
            fill += [_FILL[m.reduce]] * (2 * width if m.reduce == "mean" else width)
        self._fill = torch.tensor(fill, dtype=torch.float64, device=self.device)
        self._gather = any(m.reduce in ("max", "min") for m in metrics)
        self._buffers: dict[str, torch.Tensor] = {}
        self._sealed: list[torch.Tensor] = []  # finished evaluation passes, not yet reported

    def _width(self, m: Metric) -> int:
        return self.num_layers + m.from_input if m.per_layer else 1

    def buffer(self, split: str) -> torch.Tensor:
        if split not in self._buffers:
            self._buffers[split] = self._fill.clone()
        return self._buffers[split]

    def add(self, split: str, key: str, value, *, layer: int | None = None, weight=1.0) -> None:
        """Record one value of ``key`` (``layer``: 1-based, 0-based for ``from_input``;
        per-layer metrics only)."""
        m = self.metrics[key]
        if m.per_layer != (layer is not None):
            raise ValueError(f"metric {key}: layer given {layer!r}, per_layer={m.per_layer}")
        buf = self.buffer(split)
        width = self._width(m)
        i = self._offset[key] + (layer - 1 + m.from_input if m.per_layer else 0)
        value = value.detach().to(buf.device, buf.dtype) if torch.is_tensor(value) else value
        if m.reduce in ("sum", "mean"):
            buf[i] += value
            if m.reduce == "mean":
                weight = (
                    weight.detach().to(buf.device, buf.dtype) if torch.is_tensor(weight) else weight
                )
                buf[i + width] += weight
        else:
            op = torch.maximum if m.reduce == "max" else torch.minimum
            buf[i] = op(buf[i], torch.as_tensor(value, dtype=buf.dtype, device=buf.device))

    def weights(self, split: str, key: str) -> torch.Tensor:
        """The summed weights (record counts) of a mean metric on this rank (host sync: tests)."""
        m = self.metrics[key]
        width = self._width(m)
        start = self._offset[key] + width
        return self.buffer(split)[start : start + width].cpu()

    def take(self, split: str) -> torch.Tensor:
        """This rank's buffer of ``split``, which is reset (no sync)."""
        buf = self.buffer(split).clone()
        self._buffers[split].copy_(self._fill)
        return buf

    def seal(self, split: str) -> None:
        """Close one evaluation pass: its records are kept apart from the next pass's (no sync)."""
        self._sealed.append(self.take(split))

    def take_sealed(self) -> list[torch.Tensor]:
        sealed, self._sealed = self._sealed, []
        return sealed

    def reduce(self, buf: torch.Tensor, group=None) -> dict[str, float | list[float] | None]:
        """The one collective (every rank must call): values by key; a mean with zero weight is
        NaN (reported, not hidden); a metric no rank recorded is None."""
        if self._gather and dist.is_initialized():
            rows = [torch.empty_like(buf) for _ in range(torch.distributed.get_world_size(group))]
            torch.distributed.all_gather(rows, buf, group=group)
            gathered = torch.stack(rows).cpu()
        else:
            gathered = dist.all_reduce_sum(buf, group).cpu()[None]
        out: dict[str, float | list[float] | None] = {}
        for key, m in self.metrics.items():
            width = self._width(m)
            start = self._offset[key]
            values = gathered[:, start : start + width]
            if m.reduce == "mean":
                total, weight = values.sum(0), gathered[:, start + width : start + 2 * width].sum(0)
                result = None if weight.sum() == 0 else total / weight
            elif m.reduce == "sum":
                result = values.sum(0)
            else:
                result = values.max(0).values if m.reduce == "max" else values.min(0).values
                result = None if torch.isinf(result).all() else result
            if result is not None:
                result = result.tolist() if m.per_layer else float(result[0])
            out[key] = result
        return out


class JumpTracker:
    """Records every metric of ``metrics.METRICS`` that has a ``reduce``: D_l (mean Psi per
    layer), ``R`` (the regulariser's per-layer mean, only when it is not Psi), the LM loss and any
    metric added there (``record_metric``); reports them and the derived metrics
    (``metrics.summarise``) under their tags (``metrics.to_scalars``).

    Args:
        num_layers: total layers across all pipeline stages (layer numbers are global, 1-based).
        weights: the layer weights w_l (for ``jreg/loss``).
        lam: lambda (for ``jreg/loss_scaled``); pass 0 when nothing is attached.
        device: where the buffers live (the GPU under NCCL, CPU under gloo).
        reg_values: also record ``R`` (the regulariser's per-layer mean) separately from D; False
            when the regulariser is Psi itself or none (then R = D).
        selfdistill: also record REG=selfdistill's ``zeta_1``, ``zeta_2`` and ``KL``.
    """

    def __init__(
        self,
        num_layers: int,
        weights: torch.Tensor,
        lam: float,
        device=None,
        *,
        reg_values: bool = False,
        selfdistill: bool = False,
    ):
        self.num_layers = num_layers
        self.weights = weights.double().cpu()
        self.lam = float(lam)
        recorded = [
            m for m in METRICS if m.reduce and (m.key != "R" or reg_values)
            and (m.key not in SELFDISTILL_KEYS or selfdistill)
        ]  # fmt: skip
        self.buffers = MetricBuffers(recorded, num_layers, device)
        self.reg_values = reg_values

    @property
    def device(self) -> torch.device:
        return self.buffers.device

    @classmethod
    def from_config(cls, cfg, device=None) -> JumpTracker:
        """Tracker for a ``JregConfig`` (``jreg/loss_scaled`` is 0 when nothing is attached)."""
        lam = cfg.lam if cfg.active else 0.0
        return cls(cfg.num_layers, cfg.weights, lam, device, reg_values=not cfg.reg_is_psi,
                   selfdistill=cfg.selfdistill is not None)  # fmt: skip

    @staticmethod
    def _split(training: bool) -> str:
        return "train" if training else "valid"

    def record(
        self,
        layer_number: int,
        psi_mean: torch.Tensor,
        reg_mean: torch.Tensor | None = None,
        training: bool = True,
    ) -> None:
        """Add one microbatch's token means for a layer; ``reg_mean`` (the regulariser's, when it
        is not Psi) is kept only by a tracker with ``reg_values`` (``from_config`` decides)."""
        split = self._split(training)
        self.buffers.add(split, "D", psi_mean, layer=layer_number)
        if self.reg_values:  # R = D when the regulariser is Psi (reg_mean None)
            value = psi_mean if reg_mean is None else reg_mean
            self.buffers.add(split, "R", value, layer=layer_number)

    def record_lm_loss(self, loss_sum: torch.Tensor, num_tokens: torch.Tensor, training: bool):
        """Add a microbatch's LM loss (sum over its tokens) and token count."""
        self.buffers.add(self._split(training), "lm_loss", loss_sum, weight=num_tokens)

    def record_metric(self, key: str, value, *, layer: int | None = None, training: bool = True):
        """Add a value of a recorded metric (``metrics.METRICS``, ``reduce`` set) by its key."""
        self.buffers.add(self._split(training), key, value, layer=layer)

    def num_records(self, split: str = "train") -> list[int]:
        """Records per layer on this rank since the last report (host sync: tests only)."""
        return [int(c) for c in self.buffers.weights(split, "D").tolist()]

    def seal(self, split: str = "valid") -> None:
        """Close one evaluation pass: its records are kept apart from the next pass's (no sync)."""
        self.buffers.seal(split)

    def report_sealed(self, group=None) -> list[dict[str, float]]:
        """Reduce every sealed pass, oldest first (one collective per pass; every rank calls)."""
        return [self._summarise(buf, group) for buf in self.buffers.take_sealed()]

    def report(self, split: str = "train", group=None) -> dict[str, float]:
        """Reduce ``split`` across ranks (collective: every rank must call), clear it, summarise.

        Returns an empty dict when no rank recorded anything for ``split``.
        """
        return self._summarise(self.buffers.take(split), group)

    def _summarise(self, buf: torch.Tensor, group) -> dict[str, float]:
        reduced = self.buffers.reduce(buf, group)
        if reduced["D"] is None:
            return {}
        line = {k: v for k, v in reduced.items() if v is not None}
        line |= summarise(reduced["D"], reduced.get("R"), self.weights, self.lam)
        if self.num_layers < 2:  # undefined for one layer: left out, as always
            del line["jump_ratio"], line["zeta_L"]
        return to_scalars(line)

    @staticmethod
    def layer_values(report: dict[str, float]) -> list[float]:
        """The D_l list from a report, in layer order."""
        return from_scalars(report).get("D", [])
