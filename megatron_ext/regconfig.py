"""``JregConfig``: what the regulariser adds, as plain data (saved in ``run_config.json``).

No torch here: the launcher builds, checks and saves a run's configuration before any heavy
import (importing torch is ~1.3 s on a quiet machine, far more on a cluster login node's shared
file system). The plug-in (``regularizer``) and the weights as a tensor (``weights``) are made
when the trainer or the analysis first asks for them; ``megatron_ext.reg`` is the runtime.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from megatron_ext import regularizers
from megatron_ext.schedules import SCHEDULES
from megatron_ext.schedules import weights as schedule_weights
from megatron_ext.sd_settings import SelfDistillConfig


@dataclass(kw_only=True)
class JregConfig:
    """What the regulariser adds: L = L_CE + lam * sum_l w_l * mean_tokens(R_l)."""

    reg: str = "jreg"
    """A regulariser of ``megatron_ext/regularizers/`` (``jreg``: R = Psi, ``l2rel``: R =
    |h_l - h_{l-1}| / |h_{l-1}|, ...) or ``none``."""
    lam: float = 0.1
    """lambda >= 0; ignored (nothing is added) when ``reg == "none"``."""
    schedule: str = "uniform"
    """Layer-weight schedule, see ``megatron_ext.schedules.weights``."""
    schedule_k: float | None = None
    """The schedule's parameter ``k`` (``last_k``, ``exp``); None for its default."""
    num_layers: int
    """Total transformer layers across all pipeline stages."""
    selfdistill: SelfDistillConfig | dict | None = None
    """``REG=selfdistill``'s settings (a dict from ``run_config.json`` is converted; None: the
    paper's); must stay None for every other REG. ``schedule`` does not apply to it."""

    def __post_init__(self):
        regularizers.check(self.reg)
        if self.reg == regularizers.SELFDISTILL:
            sd = self.selfdistill
            self.selfdistill = SelfDistillConfig(**sd) if isinstance(sd, dict) else sd
            self.selfdistill = self.selfdistill or SelfDistillConfig()
        elif self.selfdistill is not None:
            raise ValueError(f"self-distillation settings apply to REG=selfdistill, not {self.reg}")
        if not isinstance(self.lam, int | float) or not math.isfinite(self.lam) or self.lam < 0:
            raise ValueError(f"LAMBDA must be a finite number >= 0, got {self.lam!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown WEIGHTS {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        schedule_weights(self.num_layers, self.schedule, **self._k())  # checks k, num_layers

    def _k(self) -> dict:
        return {} if self.schedule_k is None else {"k": self.schedule_k}

    @property
    def weights(self):
        """w_1..w_L as a float64 tensor (imports torch)."""
        from megatron_ext.jreg import layer_weights

        return layer_weights(self.num_layers, self.schedule, **self._k())

    @property
    def regularizer(self) -> regularizers.Regularizer | None:
        """The plug-in (imported on first use; None for ``none`` and ``selfdistill``)."""
        return regularizers.get(self.reg)

    @property
    def reg_is_psi(self) -> bool:
        """True when R is Psi itself (``jreg``) or there is no per-layer regulariser (``none``,
        ``selfdistill``: then R = Psi, lambda 0): Psi is computed once and serves as D_l and R_l."""
        return self.reg in regularizers.NO_R

    @property
    def active(self) -> bool:
        """True when a per-layer loss term is attached (a plug-in regulariser, ``lam > 0``)."""
        return self.reg not in (regularizers.NONE, regularizers.SELFDISTILL) and self.lam > 0
