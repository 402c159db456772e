"""jobs/eval.sh, the PBS/Slurm eval job, run without a cluster: DRY_RUN deals a run's complete
checkpoints round-robin to one `python -m eval eval` per GPU and prints the scores step."""

from __future__ import annotations

import shlex
import sys

from tests.eval.test_rundir import fake_run
from tests.jobs.common import JOBS, clean_env, run, settings


def lanes(stdout: str) -> dict[int, list[str]]:
    """``gpu g: CUDA_VISIBLE_DEVICES=g <command>`` lines as {g: command words}."""
    out = {}
    for line in stdout.splitlines():
        if line.startswith("gpu "):
            head, _, cmd = line.partition(": ")
            words = shlex.split(cmd)
            assert words[0] == f"CUDA_VISIBLE_DEVICES={head.split()[1]}"
            out[int(head.split()[1])] = words[1:]
    return out


def test_dry_run_one_lane_per_gpu(tmp_path):
    run_dir = fake_run(tmp_path, checkpoints=(5, 10, 15, 20, 25), tracker="25")
    env = clean_env(tmp_path, DRY_RUN=1, RUN=run_dir, GPUS=2, TASKS="hellaswag",
                    NUM_FEWSHOT=5, KEEP_EXPORTS=0, BATCH="auto", LAUNCH_PYTHON=sys.executable,
                    SLURM_JOB_ID="777")  # fmt: skip
    proc = run([JOBS / "eval.sh"], env)
    assert proc.returncode == 0, proc.stderr
    assert f"eval job 777: 5 checkpoint(s) of {run_dir} on 2 GPU(s)" in proc.stdout
    got = lanes(proc.stdout)
    assert sorted(got) == [0, 1]
    for g, iters in ((0, "5,15,25"), (1, "10,20")):
        assert got[g][:4] == [sys.executable, "-m", "eval", "eval"]
        assert settings(got[g][4:]) == {
            "RUN": str(run_dir), "DEVICE": "cuda", "TASKS": "hellaswag", "NUM_FEWSHOT": "5",
            "BATCH": "auto", "KEEP_EXPORTS": "0", "ITER": iters}  # fmt: skip
    assert f"then: {sys.executable} -m eval scores RUN={run_dir}" in proc.stdout
    assert not (run_dir / "logs").exists()  # a dry run writes nothing


def test_bad_input_is_one_error_line(tmp_path):
    env = clean_env(tmp_path, DRY_RUN=1, GPUS=1, LAUNCH_PYTHON=sys.executable)
    proc = run([JOBS / "eval.sh"], env)
    assert proc.returncode == 2 and proc.stderr.startswith("error: RUN is required")
    proc = run([JOBS / "eval.sh"], {**env, "RUN": str(tmp_path / "nope")})
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith(
        f"error: run directory {tmp_path / 'nope'} does not exist")  # fmt: skip
