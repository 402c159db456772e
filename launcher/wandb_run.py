"""One W&B run per training run: a stable id stored with the run, resumed on every start.

Megatron's ``wandb.init`` gets no id (``megatron/training/global_vars.py:250-258``: dir, name,
project, config, entity), so each resumed job (walltime, Ctrl-C, preemption) used to open a new W&B
run. wandb reads ``WANDB_RUN_ID`` and ``WANDB_RESUME`` from the environment when ``init`` is not
given them, so the launcher sets both for the trainer: the id in ``runs/<RUN>/wandb/run_id`` (made
on the first start, ``WANDB_RUN_ID`` if the user set one, else random; created exclusively, so the
nodes of a multi-node job agree) and ``allow`` (resume that run if W&B has it, else create it).
Offline, every start writes ``runs/<RUN>/wandb/wandb/offline-run-<time>-<id>``; ``wandb sync`` of
them all lands in the one run. ``WANDB_PROJECT`` (default ``jreg``) and ``WANDB_ENTITY`` name where
it goes. With ``WANDB_MODE=disabled``, or where the ``wandb`` package is not installed, no W&B
flag reaches Megatron: its ``_set_wandb_writer`` (``global_vars.py:238``) imports wandb whenever
``--wandb-project`` is given, whatever the mode, and a node without the package died there with a
traceback (seen on an H200 image, 2026-12-04); TensorBoard still records everything.
"""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
from pathlib import Path

from common.files import WANDB_ID as ID_FILE
from common.settings import DEFAULT_WANDB_PROJECT as DEFAULT_PROJECT

_VALID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def run_id(run_dir: Path, wanted: str | None = None) -> str:
    """The run's W&B id: read from ``run_dir/wandb/run_id``, made there on the first call."""
    path = run_dir / ID_FILE
    if not path.is_file():
        new = wanted if wanted and _VALID.match(wanted) else secrets.token_hex(4)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            pass  # another node's launcher was first: use its id
        else:
            with os.fdopen(fd, "w") as f:
                f.write(new + "\n")
    return path.read_text().strip()


def installed() -> bool:
    return importlib.util.find_spec("wandb") is not None


def off_reason(env: dict[str, str]) -> str | None:
    """Why W&B is off for this run (None when it is on)."""
    if env.get("WANDB_MODE") == "disabled":
        return "WANDB_MODE=disabled"
    if not installed():
        return "the wandb package is not installed (uv sync installs it)"
    return None


def flags(run_dir: Path, env: dict[str, str]) -> list[str]:
    """Megatron's W&B flags: project and entity from the environment, the run's name and dir;
    none when W&B is off (``off_reason``)."""
    if off_reason(env):
        return []
    out = ["--wandb-project", env.get("WANDB_PROJECT") or DEFAULT_PROJECT,
           "--wandb-exp-name", run_dir.name, "--wandb-save-dir", str(run_dir / "wandb")]  # fmt: skip
    if env.get("WANDB_ENTITY"):
        out += ["--wandb-entity", env["WANDB_ENTITY"]]
    return out


def environment(run_dir: Path, env: dict[str, str]) -> dict[str, str]:
    """What the trainer's environment needs so wandb.init resumes the run's one W&B run."""
    return {"WANDB_RUN_ID": run_id(run_dir, env.get("WANDB_RUN_ID")), "WANDB_RESUME": "allow"}
