"""``KEY=value`` command-line settings (``make pretrain``, ``make study``) and their defaults.

The defaults a researcher sees in several places (the launcher, the study, the trainer's flags)
are defined here once.
"""

from __future__ import annotations

DEFAULT_SIZE = "tiny"
DEFAULT_REG = "jreg"
DEFAULT_LAMBDA = 0.1
DEFAULT_WEIGHTS = "uniform"
DEFAULT_SEED = 1234
DEFAULT_DATA = "data/default"
DEFAULT_WANDB_PROJECT = "jreg"  # WANDB_PROJECT when unset: training (launcher) and eval scores


def parse_settings(
    argv: list[str], known, error: type[Exception], *, strip: bool = False, where: str = ""
) -> dict[str, str]:
    """``KEY=value`` words -> dict; ``error`` for a word without ``=`` or an unknown key (``where``,
    e.g. `` for analyze``, follows the word in the message). Empty values are dropped (``make``
    passes ``KEY=`` for unset variables)."""
    out = {}
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            raise error(f"unknown setting {item!r}{where}; valid: {', '.join(known)}")
        value = value.strip() if strip else value
        if value != "":
            out[key] = value
    return out


def int_setting(
    v: dict, key: str, default: int | None, error: type[Exception], *, minimum: int = 1
) -> int | None:
    """``v[key]`` as an integer >= ``minimum`` (``default`` when absent); ``error`` otherwise."""
    if key not in v:
        return default
    try:
        value = int(v[key])
    except ValueError:
        raise error(f"{key} must be an integer, got {v[key]!r}") from None
    if value < minimum:
        raise error(f"{key} must be a positive integer, got {value}")
    return value


def flag_on(v: dict, key: str) -> bool:
    """A ``KEY=1``-style switch: on unless absent, empty or 0."""
    return v.get(key, "0") not in ("0", "")
