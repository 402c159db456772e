"""``make pretrain``: plan, check, print, record and start the run; the summary after it.

Usage: ``python -m launcher SIZE=1b REG=jreg [LAMBDA=0.1 WEIGHTS=exp:0.25 ...]`` (see
``launcher.settings.VARIABLES``). Every check that can fail runs before torch.distributed or
Megatron start, and fails with one line ``error: ...`` and exit code 2. ``DRY_RUN=1`` prints the
command instead of running it. Multi-node launchers (jobs/) pass NNODES/NODE_RANK/MASTER_ADDR/
MASTER_PORT. The run's whole output goes to ``runs/<RUN>/logs/``, the console gets a short view
of it and a summary at the end (``launcher.console``).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path

from common.files import REPO, TRACKER, atomic_write_text, read_json, read_jsonl
from common.settings import flag_on
from launcher import wandb_run
from launcher.checks import members
from launcher.command import command, run_env
from launcher.console import run_logged
from launcher.memory import available_memory, check_cpu_memory
from launcher.planner import Plan, completed_iteration, plan
from launcher.settings import LaunchError, parse_vars
from launcher.watch import TorchrunWatch
from megatron_ext import faults, sd_settings
from megatron_ext.resume import last_checkpoint
from megatron_ext.runconfig import RUN_CONFIG, DataConfig, RunConfig, RunConfigError, with_args
from megatron_ext.schedules import parse_schedule, weights


def describe_weights(p: Plan) -> str:
    """The resolved layer weights w_1..w_L, short: none when all are equal (uniform), else runs
    of equal values as ``v xN``, and the first and last three of more than six runs."""
    if p.reg == "none":
        return ""
    if p.selfdistill is not None:  # the SD_* settings given (the others: the paper's)
        names = {field: key for key, (field, *_) in sd_settings.SETTINGS.items()}
        given = "".join(f"{names[k]}={v} " for k, v in p.selfdistill.items())
        return (
            f" [{given}else the paper's: SD_K=0.25 SD_ALPHA=1 SD_DIRECTION=paper SD_TEACHER=self]"
        )
    name, kw = parse_schedule(p.weights)
    w = weights(p.model.num_layers, name, **kw)
    runs: list[list] = []
    for x in (float(f"{x:.4g}") for x in w):
        if runs and runs[-1][0] == x:
            runs[-1][1] += 1
        else:
            runs.append([x, 1])
    if len(runs) == 1:
        return ""
    words = [f"{x:.4g}" + (f" x{n}" if n > 1 else "") for x, n in runs]
    if len(words) > 6:
        words = [*words[:3], "...", *words[-3:]]
    return f" [w_1..w_{len(w)}: {', '.join(words)}]"


def describe(p: Plan, dry_run: bool = False) -> str:
    """The plan line (a dry run on CPU also says how to preview a GPU node's command)."""
    layout, train = p.layout, p.train
    if p.num_gpus:
        where = f"{p.world_size} GPU(s) ({p.nnodes} node(s) x {p.nproc})"
        if p.preview:
            where += " [preview of a GPU node's command, PLAN_GPUS]"
    else:
        where = f"CPU (gloo), {p.nnodes} node(s) x {p.nproc} proc"
        if dry_run:
            where += " [a CPU-only plan; add PLAN_GPUS=8 to preview an 8-GPU node's command]"
    picked = " (defaults for this size)" if p.defaults_used else ""
    why = ""
    if p.num_gpus and not p.use_te:
        why = f" (no FP8/SP without Transformer Engine: {p.te_problem})"
    micro = ""
    if train.micro_batch_size != p.asked_micro_batch:
        micro = (f", micro batch {train.micro_batch_size} (recipe's {p.asked_micro_batch} "
                 f"lowered {p.micro_reason})")  # fmt: skip
    schedule = f" TRAIN={p.schedule}" if p.schedule != p.size else ""
    return (
        f"pretrain SIZE={p.size}{schedule} REG={p.reg} LAMBDA={p.lam} WEIGHTS={p.weights}"
        f"{describe_weights(p)} on {where}: TP={layout.tp} PP={layout.pp} "
        f"VPP={layout.vpp or 1} CP={layout.cp} SP={'on' if layout.sequence_parallel else 'off'} "
        f"distributed-optimizer={'on' if layout.distributed_optimizer else 'off'} FP8={p.fp8}"
        f"{why}{picked}, global batch {train.global_batch_size}{micro}; data {describe_data(p)}; "
        f"run dir {p.run_dir}"
    )


def describe_data(p: Plan) -> str:
    """DATA as the plan line shows it: the folder, or each member's weight and folder."""
    if len(p.datasets) == 1:
        return _show(p.data)
    return "blend " + " + ".join(f"{d.weight:.3g} {_show(d.path)}" for d in p.datasets)


def run_config(p: Plan) -> RunConfig:
    """The run's typed configs as Megatron will use them: the plan's, with ARGS applied."""
    from megatron_ext.regconfig import JregConfig

    name, kw = parse_schedule(p.weights)
    reg = JregConfig(reg=p.reg, lam=p.lam, schedule=name, schedule_k=kw.get("k"),
                     num_layers=p.model.num_layers, selfdistill=p.selfdistill)  # fmt: skip
    blend = len(p.datasets) > 1
    data = DataConfig(
        path=str(p.data), prefixes={} if blend else p.datasets[0].prefixes(),
        tokenizer_dir=str(p.datasets[0].tokenizer_dir),
        members=[{"path": str(d.path), "weight": d.weight, "prefixes": d.prefixes()}
                 for d in p.datasets] if blend else [],
    )  # fmt: skip
    base = RunConfig(
        size=p.size, model=p.model, train=p.train, parallel=p.layout, reg=reg, seed=p.seed,
        vocab_size=p.model_vocab, bf16=bool(p.num_gpus), data=data,
        save_dir=str(p.run_dir / "checkpoints"),
    )  # fmt: skip
    return with_args(base, p.extra)


def write_records(p: Plan, cmd: list[str]) -> None:
    """``command.txt`` (for humans), ``launch.json`` (what a resume must match) and
    ``run_config.json`` (the typed configs eval/ rebuilds the run from)."""
    old_record = read_json(p.run_dir / "launch.json")
    (p.run_dir / "command.txt").write_text(shlex.join(cmd) + "\n")
    record = {
        "size": p.size,
        "train_iters": p.train.train_iters,
        "vocab": p.model_vocab,
        **faults.data_record(old_record, members(p.datasets)),
    }
    atomic_write_text(p.run_dir / "launch.json", json.dumps(record) + "\n")
    atomic_write_text(p.run_dir / RUN_CONFIG, run_config(p).to_json())


def main(argv: list[str] | None = None) -> int:
    try:
        v = parse_vars(sys.argv[1:] if argv is None else argv)
        if os.environ.get("PLAN_GPUS") and not flag_on(v, "DRY_RUN"):
            raise LaunchError("PLAN_GPUS only plans for other machines; add DRY_RUN=1 or unset it")
        p = plan(v)
        run_config(p)  # ARGS that the run's records cannot hold: refused now, not at the start
    except (LaunchError, RunConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    cmd = command(p, v)
    dry_run = flag_on(v, "DRY_RUN")
    done = completed_iteration(p)
    if done is not None and not dry_run:
        print(
            f"run complete: iteration {done} of {p.train.train_iters} in {p.run_dir}; "
            "nothing to do (to train further: a larger ITERS=... with "
            "ARGS=--override-opt_param-scheduler)",
            flush=True,
        )
        return 0
    if not (p.num_gpus or dry_run or flag_on(v, "FORCE_CPU")):
        try:
            check_cpu_memory(p, available_memory())
        except LaunchError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    print(describe(p, dry_run), flush=True)
    if dry_run:
        print(shlex.join(cmd))
        return 0
    p.run_dir.mkdir(parents=True, exist_ok=True)
    if v.get("NODE_RANK", "0") == "0":  # one writer per run, also on a shared multi-node FS
        if p.fallback:
            bad, good, problem = p.fallback
            for path in faults.fall_back(p.run_dir / "checkpoints", bad, good):
                print(f"set aside an unreadable checkpoint ({problem}): {path}", flush=True)
            print(f"resuming from iter_{good:07d}, the newest readable checkpoint", flush=True)
        write_records(p, cmd)
    log = log_path(p.run_dir, v)
    if (why := wandb_run.off_reason(dict(os.environ))) and why != "WANDB_MODE=disabled":
        print(f"W&B off: {why}; TensorBoard logs in {_show(p.run_dir / 'tensorboard')}")
    print(f"log: {_show(log)} (all output; arguments: {_show(p.run_dir / 'arguments.txt')})")
    started = time.time()
    resumed_from = p.fallback[1] if p.fallback else last_checkpoint(p.run_dir / "checkpoints")
    # Several processes: the last line of a failed run is ours (launcher.watch.TorchrunWatch).
    watch = TorchrunWatch(p.run_dir / "checkpoints") if p.world_size > 1 else None
    return run_logged(
        cmd, run_env(p, v), log, header=[describe(p), shlex.join(cmd)],
        on_success=lambda: summary(p, v, log, time.time() - started, resumed_from),
        watch=watch,
    )  # fmt: skip


def log_path(run_dir: Path, v: dict) -> Path:
    """``logs/<job id>.node<rank>.log`` in a PBS/Slurm job (next to the job's own
    ``<job id>.log``), else ``logs/<YYYYmmdd-HHMMSS>[.node<rank>].log``."""
    job = os.environ.get("PBS_JOBID") or os.environ.get("SLURM_JOB_ID")
    node = f".node{v.get('NODE_RANK', '0')}" if job or int(v.get("NNODES", "1")) > 1 else ""
    return run_dir / "logs" / f"{job or time.strftime('%Y%m%d-%H%M%S')}{node}.log"


def _show(path: Path) -> str:
    """A path as the user should type it: relative to the repo when inside it."""
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def summary(p: Plan, v: dict, log: Path, seconds: float,
            resumed_from: int | None = None) -> list[str]:  # fmt: skip
    """What the run left and what to run next (printed after a successful run, node 0 only).
    ``resumed_from``: the checkpoint iteration this start resumed from (None: a fresh run)."""
    if v.get("NODE_RANK", "0") != "0":
        return []
    run_dir = p.run_dir
    tracker = run_dir / "checkpoints" / TRACKER
    latest = tracker.read_text().strip() if tracker.is_file() else "none"
    lines = read_jsonl(run_dir / "metrics.jsonl")
    finals = []
    train = [x for x in lines if "split" not in x]
    if train:
        finals.append(f"train {train[-1]['lm_loss']:.4f} (iteration {train[-1]['iteration']})")
    last = train[-1]["iteration"] if train else None
    for x in lines[-3:]:  # the passes at the last iteration: in training, after training, test
        if x.get("split") == "test":
            finals.append(f"test {x['lm_loss']:.4f}")
        elif x.get("split") == "valid" and x["iteration"] == last:
            when = "after training" if x.get("after_training") else "in training"
            finals.append(f"validation {x['lm_loss']:.4f} (pass {x.get('eval_pass')}, {when})")
    run_arg = run_dir.name if run_dir.parent == REPO / "runs" else _show(run_dir)
    rd = _show(run_dir)
    total = p.train.train_iters
    # where this start ended: its last checkpoint (a stop at the time limit or --exit-interval
    # saves one and exits 0 before ITERS)
    reached = int(latest) if latest.isdigit() else (last or total)
    resumed = ""
    if resumed_from:
        trained = reached - resumed_from
        resumed = f" ({trained} trained in this start, resumed from iteration {resumed_from})"
    head = (
        f"{total} iterations" if reached >= total else f"stopped at iteration {reached} of {total}"
    )
    return [
        f"done in {seconds / 60:.1f} min: {head} of {rd}{resumed}",
        f"  checkpoints  {rd}/checkpoints (latest iteration {latest})",
        f"  metrics      {rd}/metrics.jsonl, TensorBoard {rd}/tensorboard, W&B {rd}/wandb",
        f"  logs         {_show(log)}, arguments {rd}/arguments.txt",
        f"  lm loss      {', '.join(finals) or 'none logged'}",
        f"  next         make analyze RUN={run_arg}; make plots RUN={run_arg}; "
        f"make eval RUN={run_arg}",
    ]
