"""``REG=selfdistill``'s settings and what it refuses, without torch (the launcher checks them
before anything starts; the trainer checks the same again for a direct ``python -m
megatron_ext.train``).

The launcher's ``SD_*`` settings become the trainer's ``--sd-*`` flags and the fields of
``SelfDistillConfig`` (saved in ``run_config.json`` under ``reg.selfdistill``). Defaults are the
paper's and live in ``SelfDistillConfig``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

NAME = "selfdistill"
DIRECTIONS = ("paper", "forward")
TEACHERS = ("self", "frozen")


@dataclass(kw_only=True)
class SelfDistillConfig:
    """The paper's settings are the defaults."""

    k: float = 0.25
    """w_l proportional to exp(k l), l = 0..L."""
    alpha: float = 1.0
    """Weight of zeta_2 against zeta_1."""
    direction: str = "paper"
    """``paper``: KL(q_l || q_target); ``forward``: KL(q_target || q_l)."""
    teacher: str = "self"
    """``self``: the current model's final distribution, detached; ``frozen``: a frozen copy of
    the model at distillation start (the caller passes its final hidden state, norm and head)."""
    chunk_tokens: int = 512
    """Tokens per lens piece: the memory bound is a few [chunk_tokens, vocab / tp] tensors."""

    def __post_init__(self):
        if not math.isfinite(self.k):
            raise ValueError(f"selfdistill k must be finite, got {self.k!r}")
        if not math.isfinite(self.alpha) or self.alpha < 0:
            raise ValueError(f"selfdistill alpha must be a finite number >= 0, got {self.alpha!r}")
        if self.direction not in DIRECTIONS:
            raise ValueError(
                f"unknown KL direction {self.direction!r}; valid: {', '.join(DIRECTIONS)}"
            )
        if self.teacher not in TEACHERS:
            raise ValueError(f"unknown TEACHER {self.teacher!r}; valid: {', '.join(TEACHERS)}")
        if self.chunk_tokens < 1:
            raise ValueError(f"chunk_tokens must be >= 1, got {self.chunk_tokens!r}")


# launcher setting -> (SelfDistillConfig field, trainer flag, parse, help)
SETTINGS = {
    "SD_K": ("k", "--sd-k", float, "w_l proportional to exp(SD_K l), l = 0..L (default 0.25)"),
    "SD_ALPHA": ("alpha", "--sd-alpha", float, "weight of zeta_2 against zeta_1 (default 1)"),
    "SD_DIRECTION": ("direction", "--sd-direction", str,
                     "paper: KL(q_l || q_target) (default) | forward: KL(q_target || q_l)"),
    "SD_TEACHER": ("teacher", "--sd-teacher", str,
                   "self: the model's own final distribution, detached (default); frozen: "
                   "INIT='s model, read again at every start (needs INIT=)"),
    "SD_CHUNK": ("chunk_tokens", "--sd-chunk-tokens", int,
                 "tokens per logit-lens piece (default 512; memory vs. step time)"),
}  # fmt: skip
FLAGS = {flag: (field, kind) for field, flag, kind, _ in SETTINGS.values()}


def parse(v: dict[str, str], reg: str) -> dict | None:
    """The ``SD_*`` settings given, as SelfDistillConfig fields (None unless REG=selfdistill);
    raises ValueError with one line for a bad value or SD_* without REG=selfdistill."""
    given = {key: v[key] for key in SETTINGS if key in v}
    if reg != NAME:
        if given:
            raise ValueError(f"{', '.join(given)} applies to REG={NAME} only, not REG={reg}")
        return None
    out: dict = {}
    for key, text in given.items():
        field, _, kind, _ = SETTINGS[key]
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"{key} must be {kind.__name__}, got {text!r}") from None
        out[field] = value
    check(out)
    return out


def check(fields: dict) -> None:
    """One-line ValueError for a bad value (the same rules as SelfDistillConfig's)."""
    k, alpha = fields.get("k", 0.25), fields.get("alpha", 1.0)
    if not math.isfinite(k):
        raise ValueError(f"SD_K must be finite, got {k!r}")
    if not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"SD_ALPHA must be a finite number >= 0, got {alpha!r}")
    if fields.get("direction", "paper") not in DIRECTIONS:
        raise ValueError(
            f"SD_DIRECTION must be one of {', '.join(DIRECTIONS)}, got {fields['direction']!r}"
        )
    if fields.get("teacher", "self") not in TEACHERS:
        raise ValueError(
            f"SD_TEACHER must be one of {', '.join(TEACHERS)}, got {fields['teacher']!r}"
        )
    if fields.get("chunk_tokens", 512) < 1:
        raise ValueError(f"SD_CHUNK must be >= 1, got {fields['chunk_tokens']!r}")


def flags(fields: dict | None) -> list[str]:
    """The trainer flags of the given fields."""
    by_field = {field: flag for field, flag, _, _ in SETTINGS.values()}
    return [w for field, value in (fields or {}).items() for w in (by_field[field], str(value))]


def refusal(
    *,
    pp: int,
    vpp: int | None,
    cp: int,
    recompute: str | None,
    teacher: str = "self",
    init: bool = False,
    grad_accum_fusion: bool = False,
) -> str | None:
    """Why REG=selfdistill cannot train on this layout (one line), or None.

    - PP > 1 (and VPP): zeta_1 needs every layer's hidden state on the stage that holds the final
      norm and the output layer, the last one; they would have to cross the pipeline.
    - CP > 1: each rank holds a zigzag slice of the sequence; not checked against the reference.
    - full recompute: the layers run under a checkpoint whose first pass keeps no graph, so the
      hidden states collected for zeta_1 would carry no gradient (selective recompute is fine).
    - gradient-accumulation fusion (Apex's fused wgrad): the output layer then writes its weight
      gradient straight into ``main_grad`` and marks it added, and DDP drops the lens's gradient
      of that weight (distributed_data_parallel.py:490, megatron-core 0.19.2).
    - TEACHER=frozen without INIT= (``init``): the teacher is the model distillation starts from,
      read from INIT's checkpoint at every start (``megatron_ext.sd_teacher``); a run from random
      weights has none.
    """
    if pp > 1 or (vpp or 1) > 1:
        return (
            f"REG={NAME} needs PP=1 (the output layer that zeta_1 projects every layer through "
            "lives on the last pipeline stage); use TP/SP/DP instead"
        )
    if cp > 1:
        return f"REG={NAME} needs CP=1 (context parallelism is not checked for it); use TP/SP/DP"
    if recompute == "full":
        return (
            f"REG={NAME} cannot run with --recompute-granularity full (the hidden states it "
            "collects would have no gradient); use selective recompute or none"
        )
    if grad_accum_fusion:
        return (
            f"REG={NAME} cannot run with gradient-accumulation fusion (the output layer's fused "
            "wgrad makes DDP drop the lens's gradient); add --no-gradient-accumulation-fusion"
        )
    if teacher == "frozen" and not init:
        return (
            "SD_TEACHER=frozen needs INIT=<imported model> (the teacher is the model distillation "
            "starts from); use SD_TEACHER=self for a run from random weights"
        )
    return None
