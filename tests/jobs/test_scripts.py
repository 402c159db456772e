"""The ABCI (PBS) and Slurm job scripts and `make submit`, run without a cluster.

DRY_RUN prints one exact launcher command per host; the real path runs against fake
mpirun/srun/module (tests/jobs/common.py) that start those commands once per rank, with a fake
python standing in for the launcher; `make submit` validates through the launcher and calls a fake
qsub/sbatch only with SUBMIT=1.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys

import pytest

from tests.helpers import fake_import
from tests.jobs.common import (
    JOBS,
    calls,
    clean_env,
    node_lines,
    pbs_nodefile,
    run,
    settings,
)

HOSTS = ["hnode001", "hnode002", "hnode003", "hnode004"]
ARGS = "--recompute-granularity full --seq-length 4096"


def cluster_env(tmp_path, scheduler: str, **extra):
    """Environment of a 4-node job of either scheduler; returns (script, env, expected port)."""
    if scheduler == "pbs":
        env = clean_env(tmp_path, PBS_NODEFILE=pbs_nodefile(tmp_path, HOSTS),
                        PBS_JOBID="123456.pbs1", **extra)  # fmt: skip
        return JOBS / "abci" / "pretrain.sh", env, str(10000 + 123456 % 50000)
    env = clean_env(tmp_path, SLURM_JOB_NODELIST="hnode[001-003],hnode004", SLURM_JOB_ID="98765",
                    SLURM_CPUS_ON_NODE="96", **extra)  # fmt: skip
    return JOBS / "slurm" / "pretrain.sbatch", env, str(10000 + 98765 % 50000)


@pytest.mark.parametrize("scheduler", ["pbs", "slurm"])
def test_dry_run_prints_one_launch_line_per_host(tmp_path, scheduler):
    script, env, port = cluster_env(tmp_path, scheduler, DRY_RUN=1, SIZE="8b", REG="jreg",
                                    ARGS=ARGS, RUN=tmp_path / "run", INIT=tmp_path / "imported",
                                    TRAIN="1b")  # fmt: skip
    proc = run([script], env)
    assert proc.returncode == 0, proc.stderr
    lines = node_lines(proc.stdout)
    assert [(rank, n, host) for rank, n, host, _ in lines] == [
        (i, 4, h) for i, h in enumerate(HOSTS)
    ], proc.stdout
    for rank, _, _, words in lines:
        assert words[0] == str(JOBS / "local.sh")
        assert settings(words[1:]) == {
            "SIZE": "8b", "REG": "jreg", "ARGS": ARGS, "RUN": str(tmp_path / "run"),
            "INIT": str(tmp_path / "imported"), "TRAIN": "1b", "NNODES": "4", "NODE_RANK": str(rank), "NPROC": "8",
            "MASTER_ADDR": "hnode001", "MASTER_PORT": port,
        }  # fmt: skip
    assert calls(tmp_path) == []  # no mpirun/srun/module
    assert not (tmp_path / "run").exists()  # nor a log


@pytest.mark.parametrize("scheduler", ["pbs", "slurm"])
def test_real_path_starts_the_printed_command_once_per_node(tmp_path, scheduler):
    script, env, _ = cluster_env(tmp_path, scheduler, SIZE="8b", ARGS=ARGS, RUN=tmp_path / "run",
                                 LAUNCH_PYTHON=tmp_path / "bin" / "fake-python")  # fmt: skip
    plan = run([script], {**env, "DRY_RUN": "1"})
    proc = run([script], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # each rank ran exactly the command printed for its node, in node order
    launched = [shlex.split(x)[1:] for x in proc.stdout.splitlines() if x.startswith("LAUNCH ")]
    expected = [["-m", "launcher", *words[1:]] for *_, words in node_lines(plan.stdout)]
    assert launched == expected
    made = calls(tmp_path)
    jobid = env.get("PBS_JOBID") or env["SLURM_JOB_ID"]
    log = (tmp_path / "run" / "logs" / f"{jobid}.log").read_text()
    assert "node 3/4 host hnode004:" in log and log.count("LAUNCH ") == 4
    if scheduler == "pbs":
        assert made[0] == ["module", "load", "hpcx/2.20"]
        mpirun = made[1]
        hostfile = tmp_path / "run" / "logs" / f"{jobid}.hosts"
        assert mpirun[:9] == ["mpirun", "-np", "4", "-npernode", "1", "-hostfile", str(hostfile),
                              "-bind-to", "none"]  # fmt: skip
        assert hostfile.read_text() == "".join(f"{h} slots=1\n" for h in HOSTS)
        exported = {mpirun[i + 1] for i, w in enumerate(mpirun) if w == "-x"}
        assert {"CUDA_DEVICE_MAX_CONNECTIONS", "NCCL_IB_TIMEOUT", "TORCH_NCCL_AVOID_RECORD_STREAMS",
                "LAUNCH_PYTHON", "PATH", "VIRTUAL_ENV"} <= exported  # fmt: skip
    else:
        srun = made[0]
        # the node's 96 cores for its one task (current Slurm gives a step 1 core otherwise)
        assert srun[:6] == ["srun", "--nodes=4", "--ntasks=4", "--ntasks-per-node=1",
                            "--cpus-per-task=96", "--cpu-bind=none"]  # fmt: skip
        assert len(made) == 1  # no modules by default on Slurm
        assert "#SBATCH --mem=0\n" in script.read_text()


@pytest.mark.parametrize("scheduler", ["pbs", "slurm"])
def test_kernel_caches_are_node_local(tmp_path, scheduler):
    """Item 8: Triton/Inductor caches defaulted to $HOME (the shared file system) for every rank;
    the job puts them under PBS's per-job local dir (ABCI) or $TMPDIR, and mpirun passes them."""
    local = tmp_path / ("pbs-local" if scheduler == "pbs" else "tmpdir")
    where = {"PBS_LOCALDIR": local} if scheduler == "pbs" else {"TMPDIR": local}
    script, env, _ = cluster_env(tmp_path, scheduler, SIZE="8b", RUN=tmp_path / "run",
                                 LAUNCH_PYTHON=tmp_path / "bin" / "fake-python", **where)  # fmt: skip
    proc = run([script], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    user = env.get("USER") or str(os.getuid())
    caches = [x.split()[1:] for x in proc.stdout.splitlines() if x.startswith("CACHES ")]
    root = local / f"jreg-cache-{user}"
    assert caches == [[str(root / "triton"), str(root / "inductor")]] * 4, proc.stdout
    if scheduler == "pbs":
        mpirun = next(c for c in calls(tmp_path) if c[0] == "mpirun")
        exported = {mpirun[i + 1] for i, w in enumerate(mpirun) if w == "-x"}
        assert {"TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR"} <= exported


def test_node_command_is_torchrun_with_the_rendezvous(tmp_path, smoke_data):
    """Node 2's printed command, through the real launcher (DRY_RUN): torchrun for 8 ranks."""
    script, env, port = cluster_env(tmp_path, "pbs", DRY_RUN=1, SIZE="8b", DATA=smoke_data,
                                    RUN=tmp_path / "run")  # fmt: skip
    words = node_lines(run([script], env).stdout)[2][3]
    proc = run([*words, "DRY_RUN=1"], {**env, "LAUNCH_PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr
    cmd = proc.stdout.splitlines()[-1]
    assert (
        "-m launcher.torchrun --nproc-per-node 8 --nnodes 4 --node-rank 2 "
        f"--master-addr hnode001 --master-port {port} --shutdown-timeout 900 "
        "-m megatron_ext.train" in cmd
    ), cmd
    assert "4 node(s) x 8 proc" in proc.stdout


def submit_line(stdout: str, command: str) -> list[str]:
    (line,) = [x for x in stdout.splitlines() if x.startswith(command + " ")]
    return shlex.split(line)


def test_make_submit_prints_qsub_and_submits_only_with_submit(tmp_path, smoke_data):
    env = clean_env(tmp_path)
    base = ["make", "-s", "submit", "SIZE=8b", "REG=jreg", "NODES=4", "GROUP=gtest",
            f"DATA={smoke_data}", f"RUN={tmp_path / 'run'}", f"ARGS={ARGS}"]  # fmt: skip
    proc = run(base, env)
    assert proc.returncode == 0, proc.stderr
    # the launcher's plan for 4 nodes of 8 GPUs (8b's default TP=2 on GPUs): the total, and why
    # FP8 and SP are off (no Transformer Engine on this machine)
    assert "32 GPU(s) (4 node(s) x 8) [preview of a GPU node's command" in proc.stdout
    assert (
        "TP=2" in proc.stdout
        and "FP8=off (no FP8/SP without Transformer Engine: transformer_engine is not installed here"
        in proc.stdout
    )
    qsub = submit_line(proc.stdout, "qsub")
    vlist = f"RUN={tmp_path / 'run'},SIZE=8b,REG=jreg,DATA={smoke_data},ARGS={ARGS}"
    assert qsub == ["qsub", "-P", "gtest", "-l", "select=4", "-l", "walltime=24:00:00",
                    "-v", vlist, "jobs/abci/pretrain.sh"]  # fmt: skip
    assert "not submitted" in proc.stdout and calls(tmp_path) == []

    proc = run([*base, "SUBMIT=1"], env)
    assert proc.returncode == 0, proc.stderr
    assert calls(tmp_path) == [qsub]  # exactly the printed line, once
    assert proc.stdout.strip().endswith("4242.pbs1")


def test_submit_slurm_passes_settings_with_export(tmp_path, smoke_data):
    env = clean_env(tmp_path)
    run_dir = tmp_path / "run"  # not the repo's runs/: a real run there would be resumed
    proc = run([JOBS / "submit.sh", "CLUSTER=slurm", "NODES=2", "GPUS_PER_NODE=4", "PARTITION=gpu",
                "GROUP=acct", f"RUN={run_dir}", "SIZE=tiny", f"DATA={smoke_data}", "SUBMIT=1"],
               env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (
        "8 GPU(s) (2 node(s) x 4)" in proc.stdout
        and "micro batch 1 (recipe's 4 lowered" in proc.stdout
    )
    sbatch = submit_line(proc.stdout, "sbatch")
    assert sbatch == ["sbatch", "--nodes=2", "--time=24:00:00", "--gpus-per-node=4",
                      "--account=acct", "--partition=gpu",
                      f"--export=ALL,GPUS_PER_NODE=4,RUN={run_dir},SIZE=tiny,DATA={smoke_data}",
                      "jobs/slurm/pretrain.sbatch"]  # fmt: skip
    assert calls(tmp_path) == [sbatch]


@pytest.mark.parametrize("cluster", ["abci", "slurm"])
def test_submit_passes_init_to_the_job(tmp_path, smoke_data, cluster):
    """INIT= (and TRAIN=) reach the job's settings; the plan on the login node reads the imported
    model and says its schedule."""
    init = fake_import(tmp_path / "imported", smoke_data, tie_embeddings=True)
    proc = run([JOBS / "submit.sh", f"CLUSTER={cluster}", "NODES=2", "GROUP=g", "SIZE=1b",
                f"INIT={init}", f"DATA={smoke_data}", f"RUN={tmp_path / 'run'}", "SUBMIT=1"],
               clean_env(tmp_path))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "SIZE=1b TRAIN=continued REG=jreg" in proc.stdout and "global batch 128" in proc.stdout
    (line,) = calls(tmp_path)
    passed = line[-2].removeprefix("--export=ALL,GPUS_PER_NODE=8,").split(",")
    assert f"INIT={init}" in passed and passed[:2] == [f"RUN={tmp_path / 'run'}", "SIZE=1b"]
    proc = run([JOBS / "submit.sh", f"CLUSTER={cluster}", "NODES=2", "GROUP=g", "TRAIN=fast",
                f"DATA={smoke_data}", f"RUN={tmp_path / 'run'}"], clean_env(tmp_path))  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown TRAIN 'fast'")


@pytest.mark.parametrize(
    "args, says",
    [
        (["SIZE=8b", "NODES=0", "GROUP=gtest"], "NODES must be a positive integer"),
        (["SIZE=8b", "NODES=4"], "GROUP is required on ABCI"),
        (["SIZE=9b", "NODES=4", "GROUP=gtest"], "unknown SIZE '9b'"),
        (["SIZE=8b", "NNODES=4", "GROUP=gtest"], "NNODES is set by the job itself"),
        (["CLUSTER=slurm", "NODES=2", "ARGS=--x a,b"], "sbatch --export cannot pass"),
    ],
)
def test_submit_bad_input_one_line_nothing_submitted(tmp_path, args, says):
    proc = run([JOBS / "submit.sh", *args, "SUBMIT=1"], clean_env(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [proc.stderr.strip()], proc.stderr  # one line
    assert proc.stderr.startswith("error: ") and says in proc.stderr, proc.stderr
    assert proc.stdout == ""
    assert calls(tmp_path) == []


def test_make_submit_bad_input_fails(tmp_path):
    proc = run(["make", "-s", "submit", "NODES=0", "GROUP=gtest", "SUBMIT=1"], clean_env(tmp_path))
    assert proc.returncode != 0
    assert proc.stderr.startswith("error: NODES must be a positive integer"), proc.stderr
    assert calls(tmp_path) == []


def shellcheck() -> str:
    """Path of shellcheck, installing the Debian package if missing; skips when it cannot."""
    found = shutil.which("shellcheck")
    if found:
        return found
    if not shutil.which("apt-get") or os.geteuid() != 0:
        pytest.skip("shellcheck is not installed and apt-get (as root) is not available")
    log = ""
    for cmd in (["apt-get", "install", "-y", "-qq", "shellcheck"], ["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "shellcheck"]):  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})  # fmt: skip
        log = proc.stdout + proc.stderr
        if cmd[1] == "install" and proc.returncode == 0:
            break
    found = shutil.which("shellcheck")
    if not found:
        pytest.skip(f"shellcheck is not installed and apt-get could not install it: {log[-300:]}")
    return found


def test_shellcheck_passes_on_every_script():
    scripts = sorted(JOBS.rglob("*.sh")) + sorted(JOBS.rglob("*.sbatch"))
    assert len(scripts) == 8
    proc = subprocess.run([shellcheck(), "-x", *map(str, scripts)], cwd=JOBS.parent,
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "scheduler, time_left, margin, limit",
    [("pbs", "02:00:00", None, "110"), ("slurm", "1-00:30:00", "20", "1450"),
     ("slurm", "45:00", None, "35"), ("pbs", "00:05:00", None, None), ("pbs", "", None, None)],
)  # fmt: skip
def test_jobs_stop_training_before_their_time_limit(tmp_path, scheduler, time_left, margin, limit):
    """The job reads its time left (qstat/squeue) and passes TIME_LIMIT = that - STOP_MARGIN."""
    extra = {"STOP_MARGIN": margin} if margin else {}
    script, env, _ = cluster_env(tmp_path, scheduler, DRY_RUN=1, SIZE="8b", **extra)
    fake = {"pbs": "qstat", "slurm": "squeue"}[scheduler]
    if time_left:  # qstat -f prints "Resource_List.walltime = H:MM:SS"; squeue -o %L the time left
        line = f"    Resource_List.walltime = {time_left}" if fake == "qstat" else time_left
        (tmp_path / "bin" / fake).write_text(f"#!/usr/bin/env bash\necho '{line}'\n")
        (tmp_path / "bin" / fake).chmod(0o755)
    proc = run([script], env)
    assert proc.returncode == 0, proc.stderr
    for *_, words in node_lines(proc.stdout):
        assert settings(words[1:]).get("TIME_LIMIT") == limit
    if limit is None:
        assert "warning: " in proc.stdout and "TIME_LIMIT" in proc.stdout
    given = run([script], {**env, "TIME_LIMIT": "30"})  # an explicit one wins
    assert all(settings(w[1:])["TIME_LIMIT"] == "30" for *_, w in node_lines(given.stdout))


def test_make_submit_passes_time_limit_and_stop_margin(tmp_path, smoke_data):
    env = clean_env(tmp_path)
    cmd = ["make", "-s", "submit", "SIZE=8b", "NODES=1", "GROUP=gtest", f"DATA={smoke_data}",
           f"RUN={tmp_path / 'run'}", "STOP_MARGIN=20", "TIME_LIMIT=1:00:00"]  # fmt: skip
    proc = run(cmd, env)
    assert proc.returncode == 0, proc.stderr
    vlist = submit_line(proc.stdout, "qsub")[-2].split(",")
    assert "STOP_MARGIN=20" in vlist and "TIME_LIMIT=1:00:00" in vlist, vlist
    bad = run([*cmd[:-1], "TIME_LIMIT=soon"], env)  # checked by the launcher before submitting
    assert bad.returncode == 2 and "TIME_LIMIT must be minutes or H:MM:SS" in bad.stderr
