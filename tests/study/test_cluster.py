"""``make study SCHEDULER=pbs|slurm``: one training job per run through jobs/submit.sh, then the
analyze/eval/report job after all of them; fake qsub/sbatch record what was submitted (no
cluster, no training)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import REPO
from tests.jobs.common import JOBS, calls, clean_env, run

# each training job's settings are checked by the launcher (one python start per run)
pytestmark = pytest.mark.timeout(600)
NUMBERED = """{ printf '%s' "$(basename "$0")"; printf ' %q' "$@"; printf '\\n'; } >>"$FAKE_LOG"
n=$(wc -l <"$FAKE_LOG")
"""


def fakes(tmp_path) -> dict[str, str]:
    """clean_env's fakes, but each submission answers its own id (100 + the call's number)."""
    env = clean_env(tmp_path)
    bodies = {"qsub": NUMBERED + 'echo "$((100 + n)).pbs1"\n',
              "sbatch": NUMBERED + 'echo "Submitted batch job $((100 + n))"\n'}  # fmt: skip
    for name, body in bodies.items():
        (tmp_path / "bin" / name).write_text("#!/usr/bin/env bash\nset -euo pipefail\n" + body)
    return env


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["pbs", "slurm"])
def test_study_on_a_cluster_submits_training_then_the_report(tmp_path, smoke_data, scheduler):
    env, root = fakes(tmp_path), tmp_path / "runs"
    cluster = ["SCHEDULER=" + scheduler, "GROUP=gtest"]  # 8 GPUs: DP 8 splits tiny's batch of 8
    cluster += (
        ["NODES=1"] if scheduler == "pbs" else ["NODES=2", "PARTITION=gpu", "GPUS_PER_NODE=4"]
    )
    seeds = "1235" if scheduler == "pbs" else "none"  # fewer launcher checks for the second
    study = ["SIZE=tiny", f"SEEDS={seeds}", f"DATA={smoke_data}", f"ROOT={root}", "LIMIT=2"]
    if scheduler == "slurm":  # a finished run gets no training job
        done = root / "jreg-final"
        (done / "checkpoints").mkdir(parents=True)
        (done / "checkpoints" / "latest_checkpointed_iteration.txt").write_text("4")
        (done / "launch.json").write_text('{"train_iters": 4}')
    proc = run(["make", "-s", "study", *cluster, *study], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = ["none", "jreg", "jreg-final", "none-seed1235", "jreg-seed1235"]
    names = names if scheduler == "pbs" else ["none", "jreg"]
    assert scheduler == "pbs" or "study: jreg-final: finished at iteration 4, no job" in proc.stdout
    got, n = calls(tmp_path), len(names)
    assert [c[0] for c in got] == ["qsub" if scheduler == "pbs" else "sbatch"] * (n + 1)
    ids = [f"{101 + i}.pbs1" if scheduler == "pbs" else str(101 + i) for i in range(n + 1)]
    for name, call, job in zip(names, got, ids, strict=False):
        assert f"study: {name}: training job {job}" in proc.stdout
        assert any(f"RUN={root / name}" in word for word in call), call
        assert '"seed": 12' in (root / name / "study_run.json").read_text()  # its record
        assert "depend=" not in " ".join(call) and "--dependency" not in " ".join(call)
    jreg = " ".join(got[1])
    assert "REG=jreg" in jreg and "LAMBDA=1.0" in jreg and "SEED=1234" in jreg
    if scheduler == "pbs":
        assert "WEIGHTS=final" in " ".join(got[2]) and "SEED=1235" in " ".join(got[3])
    step, after = got[n], ":".join(ids[:n])
    args_file = root / "study_args.txt"
    if scheduler == "pbs":
        assert step == ["qsub", "-P", "gtest", "-l", "select=1", "-l", "walltime=12:00:00",
                        "-W", f"depend=afterok:{after}", "-v", f"STUDY_ARGS={args_file}",
                        "jobs/study.sh"]  # fmt: skip
        assert got[0][:5] == ["qsub", "-P", "gtest", "-l", "select=1"]
        assert "watch them with: qstat -u $USER" in proc.stdout
    else:
        assert step == ["sbatch", "--nodes=1", "--time=12:00:00", f"--dependency=afterok:{after}",
                        "--gpus-per-node=4", "--account=gtest", "--partition=gpu",
                        f"--export=ALL,STUDY_ARGS={args_file}", "jobs/study.sh"]  # fmt: skip
        assert got[0][:4] == ["sbatch", "--nodes=2", "--time=24:00:00", "--gpus-per-node=4"]
        assert "watch them with: squeue --me" in proc.stdout
    assert f"analyze, eval, plots and report: job {ids[n]} (after the training jobs)" in proc.stdout
    lines = args_file.read_text().splitlines()
    assert lines[-1] == "STAGES=analyze,eval,plots,report" and f"SEEDS={seeds}" in lines
    assert not (root / "none" / "checkpoints").exists()  # nothing trained here

    # the study job runs the study's later stages with those settings
    dry = subprocess.run([JOBS / "study.sh"], cwd=REPO, capture_output=True, text=True,
                         env={**env, "STUDY_ARGS": str(args_file), "DRY_RUN": "1"})  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert f"-m study SIZE=tiny SEEDS={seeds}" in dry.stdout
    assert "STAGES=analyze,eval,plots,report" in dry.stdout


@pytest.mark.parametrize(
    "argv, says",
    [
        (["SCHEDULER=lsf", "NODES=1"], "SCHEDULER must be pbs or slurm, got 'lsf'"),
        (["NODES=2"], "SCHEDULER must be pbs or slurm, got ''"),
        (["SCHEDULER=pbs", "GROUP=g"], "NODES is required with SCHEDULER"),
        (["SCHEDULER=pbs", "NODES=2"], "GROUP is required with SCHEDULER=pbs"),
        (["SCHEDULER=slurm", "NODES=2", "LAMBDA=-1"], "LAMBDA must be a number >= 0"),
    ],
)
def test_study_on_a_cluster_bad_input_submits_nothing(tmp_path, argv, says):
    env = fakes(tmp_path)
    proc = run([sys.executable, "-m", "study", *argv, f"ROOT={tmp_path / 'runs'}"], env)
    assert proc.returncode == 2 and proc.stderr == f"error: {proc.stderr[7:]}"
    assert says in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert calls(tmp_path) == []


def test_no_scheduler_command_is_one_error(tmp_path):
    from study import cluster

    with pytest.raises(cluster.StudyError, match="not found: submit from a login node"):
        cluster.call([str(tmp_path / "qsub")], "x")
