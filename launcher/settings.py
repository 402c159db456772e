"""The launcher's ``KEY=value`` settings: names, help, and parsing of the scalar ones.

Every check here is instant (no torch import); errors are ``LaunchError``: one line, exit 2.
"""

from __future__ import annotations

import math

from common.settings import (
    DEFAULT_DATA,
    DEFAULT_LAMBDA,
    DEFAULT_REG,
    DEFAULT_SEED,
    DEFAULT_SIZE,
    DEFAULT_WEIGHTS,
    int_setting,
    parse_settings,
)
from megatron_ext import faults, regularizers, sd_settings
from recipes import SIZES


def reg_names() -> list[str]:
    """The valid REG names: the one place the launcher (check and help) takes them from; read
    from megatron_ext/regularizers/ without importing torch."""
    return regularizers.choices()


VARIABLES = {
    "RUN": "run name under runs/, or a path (default: <SIZE>-<REG>)",
    "SIZE": f"model recipe: {' '.join(SIZES)} (default {DEFAULT_SIZE})",
    "REG": f"{' | '.join(reg_names())} (default {DEFAULT_REG}; megatron_ext/regularizers/)",
    "LAMBDA": f"regulariser weight >= 0 (default {DEFAULT_LAMBDA})",
    "WEIGHTS": f"layer weights: uniform final last_k:K linear exp[:K] (default {DEFAULT_WEIGHTS})",
    **{key: f"REG=selfdistill: {text}" for key, (_, _, _, text) in sd_settings.SETTINGS.items()},
    "INIT": "start from an imported model (make import's RUN): its weights and architecture, a "
            "fresh optimizer at iteration 0, TRAIN=continued unless given; a later start resumes "
            "from the run's own checkpoint",
    "TRAIN": "training schedule: continued (recipes.training.continued: lr 1e-4, batch 128, 10M "
             "tokens; INIT='s default) or a size's name (default: SIZE's own)",
    "ITERS": "training iterations (default: the recipe's)",
    "SAVE_INTERVAL": "iterations between checkpoints",
    "LOG_INTERVAL": "iterations between log lines",
    "SEED": f"seed of weights and data order (default {DEFAULT_SEED})",
    "DATA": f"prepared dataset dir or its manifest.json (default {DEFAULT_DATA}), or a weighted "
            "blend 0.7:data/ja,0.3:data/en",
    "TP": "tensor parallel", "PP": "pipeline parallel", "VPP": "virtual pipeline stages per rank",
    "CP": "context parallel",
    "NPROC": "processes per node (default: GPUs, or 1 on CPU)",
    "NNODES": "nodes (default 1)", "NODE_RANK": "this node's rank",
    "MASTER_ADDR": "rendezvous host",
    "MASTER_PORT": "rendezvous port (default: a free one below the ephemeral range)",
    "FP8": "off | hybrid (default hybrid on Hopper+ with Transformer Engine)",
    "TE": "auto | 1 | 0: Transformer Engine on GPUs (auto: required from Hopper on; 0: the slower "
          "bf16 local spec)",
    "ARGS": "extra Megatron-LM flags, passed through last (they win)",
    "DRY_RUN": "1: print the command and exit",
    "COLLECTIVE_TIMEOUT": "seconds a collective may wait once training runs (default "
                          f"{faults.DEFAULT_COLLECTIVE_TIMEOUT_S})",
    "CKPT_FALLBACK": "1: set an unreadable latest checkpoint aside, resume from the newest readable",
    "ALLOW_DATA_CHANGE": "1: resume on a dataset whose fingerprint differs from the run's",
    "FORCE_CPU": "1: train on CPU even when the memory estimate says it cannot fit",
    "TIME_LIMIT": "stop with a checkpoint after this long: minutes or H:MM:SS (jobs: walltime - margin)",
}  # fmt: skip


class LaunchError(ValueError):
    """A user error: printed as one line, exit code 2."""


def parse_vars(argv: list[str]) -> dict[str, str]:
    return parse_settings(argv, VARIABLES, LaunchError)


def int_var(v: dict, key: str, default: int | None) -> int | None:
    """An integer setting (>= 1; NODE_RANK >= 0)."""
    return int_setting(v, key, default, LaunchError, minimum=0 if key == "NODE_RANK" else 1)


def time_limit_minutes(v: dict) -> int | None:
    """TIME_LIMIT as whole minutes (Megatron's --exit-duration-in-mins is an integer)."""
    if "TIME_LIMIT" not in v:
        return None
    text = v["TIME_LIMIT"]
    parts = text.split(":")
    if len(parts) > 3 or not all(x.isdigit() for x in parts):
        raise LaunchError(
            f"TIME_LIMIT must be minutes or H:MM:SS, e.g. 90 or 23:50:00, got {text!r}"
        )
    if len(parts) == 1:
        minutes = int(parts[0])
    else:
        h, m, sec = ([int(x) for x in parts] + [0])[:3]
        minutes = h * 60 + m + sec // 60
    if minutes < 1:
        raise LaunchError(f"TIME_LIMIT must be at least 1 minute, got {text!r}")
    return minutes


def lambda_var(v: dict) -> float:
    try:
        lam = float(v.get("LAMBDA", str(DEFAULT_LAMBDA)))
    except ValueError:
        raise LaunchError(f"LAMBDA must be a number >= 0, got {v['LAMBDA']!r}") from None
    if not math.isfinite(lam) or lam < 0:
        raise LaunchError(f"LAMBDA must be a number >= 0, got {v['LAMBDA']!r}")
    return lam
