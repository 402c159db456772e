"""``make study SCHEDULER=pbs|slurm NODES= GROUP=``: the study on a cluster (issue 25).

One training job per arm and seed through ``jobs/submit.sh`` (the same checks, walltime and
resume logic as ``make submit``), then one job ``jobs/study.sh`` that runs the study's analyze,
eval, plots and report stages once every training job has ended well (PBS ``-W
depend=afterok:``, Slurm ``--dependency=afterok:``). Prints the job ids and how to watch them.

A training job that reaches its walltime saves a checkpoint and ends; ``make study SCHEDULER=...``
again resumes every run from its latest checkpoint and reports once more. The study step's
settings go to ``<ROOT>/study_args.txt`` (one ``KEY=value`` a line: a SEEDS list has commas,
which ``qsub -v`` and ``sbatch --export`` cannot pass plainly).
"""

from __future__ import annotations

import json
import subprocess

from common.files import REPO
from study.settings import RUN_FILE, SETTINGS, StudyError, StudySettings, check_run_record, parse

CLUSTER_SETTINGS = {
    "SCHEDULER": "pbs (ABCI qsub) or slurm (sbatch): submit the study as cluster jobs",
    "NODES": "nodes per training job (required with SCHEDULER)",
    "GROUP": "qsub -P group (required on PBS) / sbatch --account",
    "WALLTIME": "walltime of each training job (default 24:00:00; jobs/submit.sh)",
    "QUEUE": "PBS queue (qsub -q)",
    "PARTITION": "Slurm partition",
    "GPUS_PER_NODE": "GPUs per node (Slurm; default 8)",
}
CLUSTERS = {"pbs": "abci", "slurm": "slurm"}  # SCHEDULER -> jobs/submit.sh CLUSTER
ARGS_FILE = "study_args.txt"
STEP_WALLTIME = "12:00:00"
AFTER_TRAINING = "analyze,eval,plots,report"


def split(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """The cluster's settings and the study's (anything else, checked by ``study.settings``)."""
    cluster, study = {}, []
    for item in argv:
        key, _, value = item.partition("=")
        if key in CLUSTER_SETTINGS:
            if value.strip():
                cluster[key] = value.strip()
        else:
            study.append(item)
    scheduler = cluster.get("SCHEDULER", "")
    if scheduler not in CLUSTERS:
        raise StudyError(f"SCHEDULER must be pbs or slurm, got {scheduler!r}")
    if "NODES" not in cluster:
        raise StudyError("NODES is required with SCHEDULER: the nodes of each training job")
    if scheduler == "pbs" and "GROUP" not in cluster:
        raise StudyError("GROUP is required with SCHEDULER=pbs: your group for qsub -P")
    return cluster, study


def job_id(stdout: str, scheduler: str) -> str:
    """The id qsub (``123.pbs1``) or sbatch (``Submitted batch job 123``) printed last."""
    words = stdout.strip().split()
    if not words:
        raise StudyError(f"{scheduler}: no job id in its output")
    return words[-1]


def submit_training(c: dict[str, str], s: StudySettings, run) -> list[str]:
    """``jobs/submit.sh`` arguments of one run's training job."""
    own = [f"{k}={c[k]}" for k in ("NODES", "GROUP", "WALLTIME", "QUEUE", "PARTITION",
                                   "GPUS_PER_NODE") if k in c]  # fmt: skip
    return [str(REPO / "jobs" / "submit.sh"), f"CLUSTER={CLUSTERS[c['SCHEDULER']]}", *own,
            "SUBMIT=1", *s.launch_settings(run)]  # fmt: skip


def step_command(c: dict[str, str], after: list[str], args_file: str) -> list[str]:
    """The qsub/sbatch line of the analyze/eval/report job, after every training job."""
    env = f"STUDY_ARGS={args_file}"
    if c["SCHEDULER"] == "pbs":
        cmd = ["qsub", "-P", c["GROUP"], "-l", "select=1", "-l", f"walltime={STEP_WALLTIME}"]
        cmd += ["-W", "depend=afterok:" + ":".join(after)] if after else []
        cmd += ["-q", c["QUEUE"]] if "QUEUE" in c else []
        return [*cmd, "-v", env, "jobs/study.sh"]
    cmd = ["sbatch", "--nodes=1", f"--time={STEP_WALLTIME}"]
    cmd += ["--dependency=afterok:" + ":".join(after)] if after else []
    cmd += [f"--gpus-per-node={c.get('GPUS_PER_NODE', '8')}"]
    cmd += [f"--account={c['GROUP']}"] if "GROUP" in c else []
    cmd += [f"--partition={c['PARTITION']}"] if "PARTITION" in c else []
    return [*cmd, f"--export=ALL,{env}", "jobs/study.sh"]


def call(cmd: list[str], what: str) -> str:
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    except OSError:
        raise StudyError(f"{cmd[0]} not found: submit from a login node of the cluster") from None
    if proc.returncode:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["failed"]
        raise StudyError(f"{what}: {lines[-1].removeprefix('error: ')}")
    return proc.stdout


def submit(argv: list[str], print_fn=print) -> list[str]:
    """Submit the study; returns the job ids (training jobs first, the study step last)."""
    c, study_argv = split(argv)
    s = parse(study_argv)
    for run in s.runs():
        check_run_record(s, run)
    from study.runner import Runner, last_checkpoint

    scheduler, runner = c["SCHEDULER"], Runner(s, print_fn=print_fn)
    ids = []
    for run in s.runs():
        run_dir = s.root / run.name
        if runner.finished(run):
            print_fn(f"study: {run.name}: finished at iteration {last_checkpoint(run_dir)}, no job")
            continue
        out = call(submit_training(c, s, run), f"training job of {run.name}")
        ids.append(job_id(out, scheduler))
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / RUN_FILE).write_text(json.dumps(run.record(s)) + "\n")
        print_fn(f"study: {run.name}: training job {ids[-1]}")
    s.root.mkdir(parents=True, exist_ok=True)
    args_file = s.root / ARGS_FILE
    kept = [x for x in study_argv if x.partition("=")[0] in SETTINGS and x.partition("=")[2]
            and not x.startswith(("STAGES=", "ROOT="))]  # fmt: skip
    args_file.write_text("\n".join([*kept, f"ROOT={s.root}", f"STAGES={AFTER_TRAINING}"]) + "\n")
    step = step_command(c, ids, str(args_file))
    ids.append(job_id(call(step, "analyze/eval/report job"), scheduler))
    print_fn(f"study: analyze, eval, plots and report: job {ids[-1]} (after the training jobs)")
    watch = "qstat -u $USER" if scheduler == "pbs" else "squeue --me"
    print_fn(f"watch them with: {watch}; the report goes to {s.doc}")
    return ids
