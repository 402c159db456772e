"""Rules written twice because one side is shell: jobs/lib.sh's run directory and defaults agree
with common/ (the launcher's)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from common.files import REPO, run_dir
from common.settings import DEFAULT_REG, DEFAULT_SIZE


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
