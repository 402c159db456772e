"""What the launcher checks before anything starts: the data (``launcher.data``), the latest
checkpoint, a resumed run's settings and Megatron options JREG cannot use (a CPU machine's memory:
``launcher.memory``). Each
failure is a ``LaunchError`` (one line, exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

from common.files import TRACKER, read_json
from common.settings import flag_on
from launcher.data import Dataset, load_data
from launcher.settings import LaunchError
from megatron_ext import faults


def check_faults(v: dict, run_dir: Path) -> tuple[list[Dataset], tuple | None]:
    """The data (refused if it vanished or changed under a resumed run; ``launcher.data``) and the
    latest checkpoint (refused if unreadable, unless CKPT_FALLBACK=1: then what to set aside; also
    for a finished run, so that a damaged final checkpoint is named before anything reads it)."""
    old = read_json(run_dir / "launch.json")
    try:
        datasets = load_data(v)
    except LaunchError as err:
        raise LaunchError(f"{err}{faults.missing_data_hint(old)}") from None
    resuming = faults.last_checkpoint(run_dir / "checkpoints") is not None
    try:
        if resuming:
            faults.check_data(old, members(datasets), run=str(run_dir),
                              allow=flag_on(v, faults.ALLOW_DATA_CHANGE))  # fmt: skip
        fallback = faults.check_checkpoint(
            run_dir / "checkpoints", fallback=flag_on(v, faults.CKPT_FALLBACK)
        )
    except faults.FaultError as err:
        raise LaunchError(str(err)) from None
    return datasets, fallback


def members(datasets: list[Dataset]) -> faults.Members:
    """The data as ``megatron_ext.faults`` records and checks it."""
    return [(d.weight, d.path, d.manifest) for d in datasets]


def flag_value(flags: list[str], name: str) -> str | None:
    """The value given to ``name`` in a flag list (last one wins), if any."""
    value = None
    for i, flag in enumerate(flags):
        if flag == name and i + 1 < len(flags):
            value = flags[i + 1]
        elif flag.startswith(name + "="):
            value = flag.split("=", 1)[1]
    return value


def flag_values(flags: list[str], name: str) -> list[str]:
    """The words after ``name`` up to the next flag (nargs='+' flags), last occurrence."""
    values: list[str] = []
    for i, flag in enumerate(flags):
        if flag == name:
            values = []
            for word in flags[i + 1 :]:
                if word.startswith("--"):
                    break
                values.append(word)
        elif flag.startswith(name + "="):
            values = flag.split("=", 1)[1].split()
    return values


def jreg_incompatible(extra: list[str], use_te: bool) -> str | None:
    """Megatron options that free the layer input JREG keeps for its backward (None if fine).

    Fine-grained activation offloading releases the offloaded tensor's storage
    (``untyped_storage().resize_(0)``, megatron/core/pipeline_parallel/
    fine_grained_activation_offload.py:1106) and restores it only for its own module's backward.
    ``attn_norm`` offloads the input of the attention norm, i.e. the layer input h_{l-1} (and
    the previous layer's output h_l); with the TE spec the norm is fused into ``linear_qkv``, so
    ``qkv_linear`` offloads the same tensor. JREG's Psi backward would then read freed memory.
    """
    if "--fine-grained-activation-offloading" not in extra:
        return None
    modules = set(flag_values(extra, "--offload-modules"))
    bad = sorted(modules & ({"attn_norm", "qkv_linear"} if use_te else {"attn_norm"}))
    if not bad:
        return None
    return (
        f"--offload-modules {' '.join(bad)} offloads the layer input that JREG keeps for its "
        "backward (D_l and the regulariser); drop it from ARGS (core_attn, attn_proj, mlp_norm "
        "and the others can stay)"
    )


def check_resume(run_dir: Path, *, size: str, train_iters: int, vocab: int, overriding: bool):
    """A run dir with checkpoints resumes only with the settings its checkpoints were made with."""
    record = run_dir / "launch.json"
    if not record.is_file() or not (run_dir / "checkpoints" / TRACKER).is_file():
        return
    old = json.loads(record.read_text())
    if old.get("size") != size:
        raise LaunchError(
            f"runs/{run_dir.name} holds a SIZE={old.get('size')} model; use SIZE={old.get('size')} "
            f"to resume it or a new RUN=name"
        )
    if old.get("vocab") != vocab:
        raise LaunchError(
            f"runs/{run_dir.name} was trained with a {old.get('vocab')}-token vocabulary, this "
            f"dataset gives {vocab}; use the original DATA or a new RUN=name"
        )
    if old.get("train_iters") != train_iters and not overriding:
        raise LaunchError(
            f"ITERS={train_iters} differs from the {old.get('train_iters')} runs/{run_dir.name} "
            "was started with (the LR schedule depends on it); resume with the same ITERS, or add "
            "ARGS=--override-opt_param-scheduler to re-plan the schedule"
        )
