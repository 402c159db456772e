"""The logged metrics: their names, and the summaries of the per-layer mean displacements D_1..D_L.

``METRICS`` is the one naming scheme: each metric's key in ``metrics.jsonl`` and
``analysis.jsonl`` (what analysis, plots and the study read), its TensorBoard/W&B tag (per-layer
metrics get one tag per layer, ``tag_01``..), its console label, and for the metrics the training
tracker records, how they reduce across ranks. ``summarise`` turns reduced per-layer means into
the derived metrics; the training tracker and the checkpoint analysis both call it.

The summaries take D as a sequence of floats or a 1-D tensor and return a Python float, so the
training tracker, the offline analysis and the study report compute the same numbers with the same
code. No torch import at module level: the report and plots use these without loading torch.

Whose metric is whose: D_l (mean Psi per layer) and S_model come from the self-distillation paper,
the jump rate zeta from the JREG paper (EACL 2026), the jump ratio D_L / D_{L-1} is this project's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class Metric:
    """One logged metric."""

    key: str
    """Its key in ``metrics.jsonl`` / ``analysis.jsonl`` (a list of L values when per-layer)."""
    tag: str
    """TensorBoard/W&B scalar (``valid/``, ``test/`` prefixed for those splits); per-layer:
    ``{tag}_{l:02d}``, l = 1..L (0..L with ``from_input``)."""
    per_layer: bool = False
    from_input: bool = False
    """Per-layer over l = 0..L (L + 1 values; l = 0 is the first layer's input)."""
    optional: bool = False
    """Only some runs log it (REG=selfdistill's): left out of a line that lacks it, not NaN."""
    reduce: str | None = None
    """How the training tracker reduces it over microbatches and ranks (``sum``, ``mean``,
    ``max``, ``min``, see ``megatron_ext.tracker``); None: derived by ``summarise``."""
    console: str | None = None
    """Label in the console's progress line (per-layer: the last layer's value); None: not shown."""
    fmt: str = ".4f"
    board: bool = True
    """Written to TensorBoard/W&B (``lm_loss`` is not: Megatron logs its own ``lm loss``)."""

    def scalars(self, value) -> dict[str, float]:
        """``{tag: value}`` (per-layer: one tag per layer)."""
        if self.per_layer:
            start = 0 if self.from_input else 1
            return {f"{self.tag}_{i:02d}": float(v) for i, v in enumerate(value, start=start)}
        return {self.tag: float(value)}


METRICS = (
    Metric(key="lm_loss", tag="lm_loss", reduce="mean", console="lm_loss", board=False),
    Metric(key="jreg_loss", tag="jreg/loss", console="jreg_loss", fmt=".5f"),
    Metric(key="jreg_loss_scaled", tag="jreg/loss_scaled"),
    Metric(key="D", tag="jump/D", per_layer=True, reduce="mean", console="D_L"),
    Metric(key="R", tag="jreg/R", per_layer=True, reduce="mean"),
    Metric(key="jump_ratio", tag="jump/ratio", console="jump ratio", fmt=".3f"),
    Metric(key="S_model", tag="jump/S_model", console="S_model", fmt=".3f"),
    Metric(key="zeta_L", tag="jump/zeta_L", console="zeta_L", fmt=".3f"),
    Metric(key="zeta_1", tag="selfdistill/zeta_1", reduce="mean", console="zeta_1",
           optional=True),
    Metric(key="zeta_2", tag="selfdistill/zeta_2", reduce="mean", console="zeta_2",
           optional=True),
    Metric(key="KL", tag="selfdistill/KL", per_layer=True, from_input=True, reduce="mean",
           optional=True),
)  # fmt: skip
"""Every logged metric, in ``metrics.jsonl`` and console order. ``D``: mean Psi per layer (always);
``R``: mean of the regulariser per layer, only when it is not Psi; ``jreg_loss``: sum_l w_l R_l
(R = D when the regulariser is Psi or none); ``jreg_loss_scaled``: lambda times it. REG=selfdistill
only (``megatron_ext.selfdistill``): ``zeta_1`` = sum_{l=0..L} w_l KL_l, ``zeta_2`` = sum_{l=1..L}
w_l |h_l - h_{l-1}| / |h_{l-1}| (token means, paper weights w_l), ``KL``: KL_0..KL_L, the token
mean KL of layer l's logit lens against the target (its direction: SD_DIRECTION)."""
SELFDISTILL_KEYS = frozenset(m.key for m in METRICS if m.optional)
BY_KEY = {m.key: m for m in METRICS}
OFF_BOARD = frozenset(m.tag for m in METRICS if not m.board)
"""Tags not written to TensorBoard/W&B."""


def to_scalars(line: dict) -> dict[str, float]:
    """``{tag: value}`` of the metrics in a ``metrics.jsonl``-style dict (the tracker's report)."""
    out: dict[str, float] = {}
    for m in METRICS:
        if m.key in line:
            out.update(m.scalars(line[m.key]))
    return out


def from_scalars(scalars: dict[str, float]) -> dict:
    """The inverse of ``to_scalars``: ``metrics.jsonl`` keys, per-layer tags gathered into lists
    in layer order; a missing scalar metric is NaN, a missing per-layer metric is left out."""
    out: dict = {}
    for m in METRICS:
        if not m.per_layer:
            if m.tag in scalars or not m.optional:
                out[m.key] = float(scalars.get(m.tag, math.nan))
            continue
        prefix = f"{m.tag}_"
        layers = sorted(
            (int(k[len(prefix) :]), v)
            for k, v in scalars.items()
            if k.startswith(prefix) and k[len(prefix) :].isdigit()
        )
        if layers:
            out[m.key] = [float(v) for _, v in layers]
    return out


def console(line: dict) -> str:
    """``lm_loss 8.2680 | jreg_loss 0.08387 | D_L 0.0232 | ...`` from a ``metrics.jsonl`` dict."""
    parts = []
    for m in METRICS:
        if m.console is None or m.key not in line:
            continue
        value = line[m.key][-1] if m.per_layer else line[m.key]
        parts.append(f"{m.console} {value:{m.fmt}}")
    return " | ".join(parts)


def summarise(d, reg=None, weights=None, lam: float | None = None) -> dict:
    """The derived metrics of one measurement, under their ``metrics.jsonl`` keys.

    Args:
        d: D_1..D_L, the mean Psi per layer.
        reg: R_1..R_L, the regulariser's mean per layer when it is not Psi (None: R = D).
        weights: w_1..w_L (None: no ``jreg_loss``).
        lam: lambda (None: no ``jreg_loss_scaled``); 0 when nothing is attached.

    Returns:
        ``D``, ``R`` (when given), ``jreg_loss``, ``jreg_loss_scaled``, ``jump_ratio``,
        ``S_model``, ``zeta_L`` (the last two NaN for a single layer).
    """
    values = _as_list(d)
    out: dict = {"D": values}
    if reg is not None:
        out["R"] = _as_list(reg)
    if weights is not None:
        import torch  # the weighted sum as torch sums it (bitwise what the logs always had)

        r = torch.tensor(out.get("R", values), dtype=torch.float64)
        w = torch.as_tensor(weights, dtype=torch.float64).cpu()
        out["jreg_loss"] = float((w * r).sum())
        if lam is not None:
            out["jreg_loss_scaled"] = lam * out["jreg_loss"]
    two = len(values) >= 2
    out["jump_ratio"] = jump_ratio(values) if two else math.nan
    out["S_model"] = convergence_score(values)
    out["zeta_L"] = jump_rate(values) if two else math.nan
    return out


def _as_list(d: Sequence[float] | Any) -> list[float]:
    """Floats from a sequence or a tensor (anything with ``detach``), in layer order."""
    values = d.detach().double().flatten().tolist() if hasattr(d, "detach") else list(d)
    if not values:
        raise ValueError("need at least one layer's displacement")
    return [float(v) for v in values]


def convergence_score(d: Sequence[float] | Any) -> float:
    """S_model = 1 - sum_l max(0, d_l - d_{l-1}) / sum_l |d_l - d_{l-1}|.

    1 when D never increases with depth (including a single layer or a constant profile),
    0 when it only increases.
    """
    values = _as_list(d)
    diffs = [b - a for a, b in zip(values, values[1:], strict=False)]
    total = sum(abs(x) for x in diffs)
    if total == 0.0:
        return 1.0
    return 1.0 - sum(max(0.0, x) for x in diffs) / total


def jump_ratio(d: Sequence[float] | Any) -> float:
    """d_L / d_{L-1}: how much larger the last layer's displacement is than the one before.

    Raises:
        ValueError: fewer than two layers (the ratio is undefined).
    """
    values = _as_list(d)
    if len(values) < 2:
        raise ValueError("jump_ratio needs at least two layers")
    if values[-2] == 0.0:
        return float("inf") if values[-1] > 0 else float("nan")
    return values[-1] / values[-2]


def jump_rate(d: Sequence[float] | Any, layer: int | None = None) -> float:
    """The JREG paper's jump rate zeta_l = 100 * sum_{k=l..L} max(0, d_k - d_{k-1}).

    ``layer`` is l, 1-based, in 2..L (there is no d_0: Psi_1 already compares h_1 with the
    embeddings h_0); the default L gives the final jump rate zeta_L = 100 * max(0, d_L - d_{L-1}).

    Raises:
        ValueError: fewer than two layers, or ``layer`` outside 2..L.
    """
    values = _as_list(d)
    if len(values) < 2:
        raise ValueError("jump_rate needs at least two layers")
    last = len(values)
    layer = last if layer is None else layer
    if not 2 <= layer <= last:
        raise ValueError(f"jump_rate layer must be in 2..{last}, got {layer}")
    rises = (max(0.0, values[k - 1] - values[k - 2]) for k in range(layer, last + 1))
    return 100.0 * sum(rises)
