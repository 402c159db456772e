"""``make pretrain``: turn SIZE=/REG=/... into the Megatron command line, check it, and start it.

Usage: ``python -m megatron_ext.launch SIZE=1b REG=jreg [LAMBDA=0.1 WEIGHTS=exp:0.25 ...]``
(see ``VARIABLES``). Every check that can fail runs here, before torch.distributed or Megatron
start, and fails with one line ``error: ...`` and exit code 2. ``DRY_RUN=1`` prints the command
instead of running it. Multi-node launchers (jobs/) pass NNODES/NODE_RANK/MASTER_ADDR/MASTER_PORT.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path

from megatron_ext.config import megatron_flags, te_available
from megatron_ext.jreg import layer_weights, parse_schedule
from recipes.models import model_recipe
from recipes.training import parallel_defaults, train_recipe

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = "data/default"
VARIABLES = {
    "RUN": "run name under runs/, or a path (default: <SIZE>-<REG>)",
    "SIZE": "model recipe: tiny 125m 350m 1b 3b 8b study (default tiny)",
    "REG": "none | jreg | l2rel (default jreg)",
    "LAMBDA": "regulariser weight >= 0 (default 0.1)",
    "WEIGHTS": "layer weights: uniform final last_k:K linear exp[:K] (default uniform)",
    "ITERS": "training iterations (default: the recipe's)",
    "SAVE_INTERVAL": "iterations between checkpoints",
    "LOG_INTERVAL": "iterations between log lines",
    "SEED": "seed of weights and data order (default 1234)",
    "DATA": f"prepared dataset dir or its manifest.json (default {DEFAULT_DATA})",
    "TP": "tensor parallel", "PP": "pipeline parallel", "VPP": "virtual pipeline stages per rank",
    "CP": "context parallel",
    "NPROC": "processes per node (default: GPUs, or 1 on CPU)",
    "NNODES": "nodes (default 1)", "NODE_RANK": "this node's rank",
    "MASTER_ADDR": "rendezvous host", "MASTER_PORT": "rendezvous port",
    "FP8": "off | hybrid (default hybrid on Hopper+ with Transformer Engine)",
    "ARGS": "extra Megatron-LM flags, passed through last (they win)",
    "DRY_RUN": "1: print the command and exit",
}  # fmt: skip


class LaunchError(ValueError):
    """A user error: printed as one line, exit code 2."""


def parse_vars(argv: list[str]) -> dict[str, str]:
    out = {}
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in VARIABLES:
            raise LaunchError(f"unknown setting {item!r}; valid: {', '.join(VARIABLES)}")
        if value != "":
            out[key] = value
    return out


def _int(v: dict, key: str, default: int | None) -> int | None:
    if key not in v:
        return default
    try:
        value = int(v[key])
    except ValueError:
        raise LaunchError(f"{key} must be an integer, got {v[key]!r}") from None
    if value < (0 if key == "NODE_RANK" else 1):
        raise LaunchError(f"{key} must be a positive integer, got {value}")
    return value


def _lambda(v: dict) -> float:
    try:
        lam = float(v.get("LAMBDA", "0.1"))
    except ValueError:
        raise LaunchError(f"LAMBDA must be a number >= 0, got {v['LAMBDA']!r}") from None
    if not math.isfinite(lam) or lam < 0:
        raise LaunchError(f"LAMBDA must be a number >= 0, got {v['LAMBDA']!r}")
    return lam


def gpu_info() -> tuple[int, int]:
    """(number of visible GPUs, major compute capability of GPU 0).

    ``PLAN_GPUS=COUNT[:CAPABILITY]`` in the environment plans for GPUs this machine lacks
    (``make submit`` on a login node; capability 9 = Hopper); only DRY_RUN may use it.
    """
    planned = os.environ.get("PLAN_GPUS", "")
    if planned:
        count, _, capability = planned.partition(":")
        if not (count.isdigit() and (capability or "9").isdigit()):
            raise LaunchError(f"PLAN_GPUS must be COUNT[:CAPABILITY], e.g. 8:9, got {planned!r}")
        return int(count), int(capability or "9")
    import torch

    if not torch.cuda.is_available():
        return 0, 0
    return torch.cuda.device_count(), torch.cuda.get_device_capability(0)[0]


def load_dataset(v: dict) -> tuple[Path, dict]:
    """Validate the prepared dataset (building the default one if missing); return its manifest."""
    data = Path(v.get("DATA", DEFAULT_DATA))
    data = data if data.is_absolute() else REPO / data
    if data.name == "manifest.json":
        data = data.parent
    if "DATA" not in v and not (data / "manifest.json").exists():
        print(f"{data} is missing: building the default corpus first (make data)", flush=True)
        if subprocess.run(["make", "-C", str(REPO), "data"]).returncode:
            raise LaunchError("make data failed; see its output above")
    proc = subprocess.run(
        [sys.executable, "-m", "data_prep", "validate", str(data)],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["validation failed"]
        raise LaunchError(lines[-1].removeprefix("error: "))
    return data, json.loads((data / "manifest.json").read_text())


def padded_vocab(vocab_size: int, tp: int) -> int:
    """Vocab padded to a multiple of 1024 (and of 128 x TP beyond TP=8): the same for every
    TP <= 8, so runs with different layouts build the same embedding and output layer."""
    multiple = max(1024, 128 * tp)
    return -(-vocab_size // multiple) * multiple


def plan(v: dict) -> dict:
    """Validate every setting and derive the full command; raises LaunchError."""
    size = v.get("SIZE", "tiny")
    reg = v.get("REG", "jreg")
    try:
        model = model_recipe(size)
        train = train_recipe(size)
    except ValueError as err:
        raise LaunchError(str(err)) from None
    if reg not in ("none", "jreg", "l2rel"):
        raise LaunchError(f"unknown REG {reg!r}; valid: none, jreg, l2rel")
    lam = _lambda(v)
    weights = v.get("WEIGHTS", "uniform")
    try:
        name, kw = parse_schedule(weights)
        layer_weights(model.num_layers, name, **kw)
    except ValueError as err:
        raise LaunchError(f"WEIGHTS={weights}: {err}") from None

    num_gpus, capability = gpu_info()
    nproc = _int(v, "NPROC", num_gpus or 1)
    nnodes = _int(v, "NNODES", 1)
    defaults = parallel_defaults(size, num_gpus)
    try:
        layout = dataclasses.replace(
            defaults, tp=_int(v, "TP", defaults.tp), pp=_int(v, "PP", defaults.pp),
            vpp=_int(v, "VPP", defaults.vpp), cp=_int(v, "CP", defaults.cp),
            sequence_parallel=None,
        )  # fmt: skip
        model.check_layout(layout.tp, layout.pp, layout.vpp)
        layout.check_world(nproc * nnodes)
    except ValueError as err:
        raise LaunchError(str(err)) from None
    if layout.cp > 1 and not (num_gpus and te_available()):
        raise LaunchError("CP>1 needs Transformer Engine on GPUs (local attention has no CP)")

    fp8 = v.get("FP8", "hybrid" if (num_gpus and capability >= 9 and te_available()) else "off")
    if fp8 not in ("off", "hybrid"):
        raise LaunchError(f"FP8 must be off or hybrid, got {fp8!r}")
    if fp8 == "hybrid" and not (num_gpus and te_available()):
        raise LaunchError(
            "FP8=hybrid needs a GPU and Transformer Engine (install the gpu extra); use FP8=off"
        )

    train = train.replace(
        train_iters=_int(v, "ITERS", train.train_iters),
        save_interval=_int(v, "SAVE_INTERVAL", train.save_interval),
        log_interval=_int(v, "LOG_INTERVAL", train.log_interval),
    )
    dp = nproc * nnodes // layout.model_parallel_size
    asked_batch = train.global_batch_size
    if train.global_batch_size % (train.micro_batch_size * dp):
        fitted = train.micro_batch_size * dp * max(
            1, train.global_batch_size // (train.micro_batch_size * dp))  # fmt: skip
        train = train.replace(global_batch_size=fitted)
    data, manifest = load_dataset(v)
    data_vocab = int(manifest["tokenizer"]["vocab_size"])
    run = v.get("RUN", f"{size}-{reg}")
    run_dir = Path(run) if "/" in run else REPO / "runs" / run  # a name, or a path
    run_dir = run_dir if run_dir.is_absolute() else REPO / run_dir
    extra = shlex.split(v.get("ARGS", ""))
    model_vocab = _flag_value(extra, "--vocab-size")
    model_vocab = int(model_vocab) if model_vocab else padded_vocab(data_vocab, layout.tp)
    if data_vocab > model_vocab:
        raise LaunchError(
            f"the dataset's tokenizer has {data_vocab} tokens but the model's vocabulary is "
            f"{model_vocab}; drop --vocab-size from ARGS or raise it to at least {data_vocab}"
        )
    check_resume(run_dir, size=size, train_iters=train.train_iters, vocab=model_vocab,
                 overriding="--override-opt_param-scheduler" in extra)  # fmt: skip
    return {
        "size": size, "reg": reg, "lam": lam, "weights": weights, "layout": layout,
        "nproc": nproc, "nnodes": nnodes, "num_gpus": num_gpus, "fp8": fp8, "model": model,
        "train": train, "data": data, "manifest": manifest, "data_vocab": data_vocab,
        "run_dir": run_dir, "seed": _int(v, "SEED", 1234), "extra": extra,
        "model_vocab": model_vocab, "asked_batch": asked_batch,
        "defaults_used": not any(k in v for k in ("TP", "PP", "VPP", "CP")),
    }  # fmt: skip


def _flag_value(flags: list[str], name: str) -> str | None:
    """The value given to ``name`` in a flag list (last one wins), if any."""
    value = None
    for i, flag in enumerate(flags):
        if flag == name and i + 1 < len(flags):
            value = flags[i + 1]
        elif flag.startswith(name + "="):
            value = flag.split("=", 1)[1]
    return value


def check_resume(run_dir: Path, *, size: str, train_iters: int, vocab: int, overriding: bool):
    """A run dir with checkpoints resumes only with the settings its checkpoints were made with."""
    record = run_dir / "launch.json"
    if (
        not record.is_file()
        or not (run_dir / "checkpoints" / "latest_checkpointed_iteration.txt").is_file()
    ):
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


def megatron_args(p: dict) -> list[str]:
    """The full flag list for ``python -m megatron_ext.train``."""
    model, layout, run_dir, data = p["model"], p["layout"], p["run_dir"], p["data"]
    splits = p["manifest"]["splits"]
    tok_dir = data / p["manifest"]["tokenizer"]["path"]
    flags = (
        megatron_flags(model)
        + p["train"].megatron_flags()
        + layout.megatron_flags(model.num_layers)
    )
    flags += [
        "--train-data-path", str(data / splits["train"]["prefix"]),
        "--valid-data-path", str(data / splits["valid"]["prefix"]),
        "--test-data-path", str(data / splits["test"]["prefix"]),
        "--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", str(tok_dir),
        "--vocab-size", str(p["model_vocab"]),
        "--make-vocab-size-divisible-by", "1",
        "--seed", str(p["seed"]),
        "--save", str(run_dir / "checkpoints"), "--load", str(run_dir / "checkpoints"),
        "--ckpt-format", "torch_dist",
        "--tensorboard-dir", str(run_dir / "tensorboard"), "--tensorboard-log-interval", "1",
        "--log-timers-to-tensorboard", "--log-validation-ppl-to-tensorboard",
        "--wandb-project", "jreg", "--wandb-exp-name", run_dir.name,
        "--wandb-save-dir", str(run_dir / "wandb"),
        "--jreg-reg", p["reg"], "--jreg-lambda", str(p["lam"]), "--jreg-weights", p["weights"],
        "--run-dir", str(run_dir),
    ]  # fmt: skip
    if p["num_gpus"]:
        flags += ["--bf16", "--transformer-impl",
                  "transformer_engine" if te_available() else "local"]  # fmt: skip
        if p["fp8"] == "hybrid":
            flags += ["--fp8-format", "hybrid", "--fp8-recipe", "tensorwise"]
    else:
        flags += [
            "--distributed-backend", "gloo", "--transformer-impl", "local",
            "--use-cpu-initialization", "--no-persist-layer-norm",
            "--no-gradient-accumulation-fusion", "--no-rope-fusion", "--no-bias-swiglu-fusion",
            "--no-masked-softmax-fusion", "--no-bias-dropout-fusion",
        ]  # fmt: skip
    return flags + p["extra"]


def command(p: dict, v: dict) -> list[str]:
    """torchrun for this node; a single process runs the entry point directly (run_env sets the
    rendezvous variables), so a signal to it reaches the trainer itself."""
    if p["nproc"] * p["nnodes"] == 1:
        return [sys.executable, "-m", "megatron_ext.train", *megatron_args(p)]
    rdzv = ["--nnodes", str(p["nnodes"]), "--node-rank", v.get("NODE_RANK", "0"),
            "--master-addr", v.get("MASTER_ADDR", "127.0.0.1"),
            "--master-port", v.get("MASTER_PORT", str(_free_port()))]  # fmt: skip
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(p["nproc"]),
            *rdzv, "-m", "megatron_ext.train", *megatron_args(p)]  # fmt: skip


def run_env(p: dict, v: dict) -> dict[str, str]:
    env = dict(os.environ)
    if p["nproc"] * p["nnodes"] == 1:
        env.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
        env.setdefault("MASTER_ADDR", v.get("MASTER_ADDR", "127.0.0.1"))
        env.setdefault("MASTER_PORT", v.get("MASTER_PORT", str(_free_port())))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONDONTWRITEBYTECODE"] = ""  # Megatron recompiles ~3,500 modules per start otherwise
    # W&B: offline unless the user asked for online (WANDB_MODE or an API key).
    if "WANDB_MODE" not in env and "WANDB_API_KEY" not in env:
        env["WANDB_MODE"] = "offline"
    env.setdefault("WANDB_SILENT", "true")
    if p["num_gpus"]:
        env.setdefault("CUDA_DEVICE_MAX_CONNECTIONS", "1")  # TP/SP comm-compute ordering
    else:
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // p["nproc"])))
    return env


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def describe(p: dict) -> str:
    layout = p["layout"]
    where = f"{p['num_gpus']} GPU(s)" if p["num_gpus"] else "CPU (gloo)"
    picked = " (defaults for this size)" if p["defaults_used"] else ""
    batch = p["train"].global_batch_size
    rounded = "" if batch == p["asked_batch"] else f" (recipe's {p['asked_batch']} rounded to DP)"
    return (
        f"pretrain SIZE={p['size']} REG={p['reg']} LAMBDA={p['lam']} WEIGHTS={p['weights']} on "
        f"{where}, {p['nnodes']} node(s) x {p['nproc']} proc: TP={layout.tp} PP={layout.pp} "
        f"VPP={layout.vpp or 1} CP={layout.cp} SP={'on' if layout.sequence_parallel else 'off'} "
        f"distributed-optimizer={'on' if layout.distributed_optimizer else 'off'} FP8={p['fp8']}"
        f"{picked}, global batch {batch}{rounded}; run dir {p['run_dir']}"
    )


def main(argv: list[str] | None = None) -> int:
    try:
        v = parse_vars(sys.argv[1:] if argv is None else argv)
        if os.environ.get("PLAN_GPUS") and v.get("DRY_RUN", "0") in ("0", ""):
            raise LaunchError("PLAN_GPUS only plans for other machines; add DRY_RUN=1 or unset it")
        p = plan(v)
    except LaunchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    cmd = command(p, v)
    print(describe(p), flush=True)
    if v.get("DRY_RUN", "0") not in ("0", ""):
        print(shlex.join(cmd))
        return 0
    p["run_dir"].mkdir(parents=True, exist_ok=True)
    if v.get("NODE_RANK", "0") == "0":  # one writer per run, also on a shared multi-node FS
        (p["run_dir"] / "command.txt").write_text(shlex.join(cmd) + "\n")
        record = {
            "size": p["size"],
            "train_iters": p["train"].train_iters,
            "vocab": p["model_vocab"],
        }
        (p["run_dir"] / "launch.json").write_text(json.dumps(record) + "\n")
    os.execvpe(cmd[0], cmd, run_env(p, v))
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
