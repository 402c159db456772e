"""Rules written twice because one side is shell: jobs/lib.sh's run directory and defaults agree
with common/ (the launcher's), and a job carries every launcher setting but those it sets itself."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from common.files import REPO, run_dir
from common.settings import DEFAULT_REG, DEFAULT_SIZE
from launcher.settings import VARIABLES


@pytest.mark.parametrize(
    "env", [{}, {"RUN": "x"}, {"RUN": "runs/sub/x"}, {"RUN": "/abs/x"}, {"SIZE": "1b"},
            {"SIZE": "8b", "REG": "none"}, {"RUN": "./rel"}],
)  # fmt: skip
def test_job_run_dir_is_the_launchers(env):
    script = f"source {REPO}/jobs/lib.sh; job_run_dir {REPO}"
    shell = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    size, reg = env.get("SIZE", DEFAULT_SIZE), env.get("REG", DEFAULT_REG)
    # the same folder (pathlib drops a "./" that the shell keeps)
    assert Path(shell.stdout.strip()) == run_dir(env.get("RUN", f"{size}-{reg}"))


def test_jobs_carry_every_launcher_setting():
    """jobs/lib.sh JOB_SETTINGS (what make submit accepts and a job passes on) is the launcher's
    settings minus the per-node ones the job sets and the local-only switches (INIT= was missing)."""
    script = f"source {REPO}/jobs/lib.sh; echo ${{JOB_SETTINGS[*]}}"
    shell = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    own = {"NPROC", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "DRY_RUN", "FORCE_CPU"}
    assert sorted(shell.stdout.split()) == sorted(set(VARIABLES) - own)
