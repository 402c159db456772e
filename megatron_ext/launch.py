"""``make pretrain``: turn SIZE=/REG=/... into the Megatron command line, check it, and start it.

Usage: ``python -m megatron_ext.launch SIZE=1b REG=jreg [LAMBDA=0.1 WEIGHTS=exp:0.25 ...]``
(see ``VARIABLES``). Every check that can fail runs here, before torch.distributed or Megatron
start, and fails with one line ``error: ...`` and exit code 2. ``DRY_RUN=1`` prints the command
instead of running it. Multi-node launchers (jobs/) pass NNODES/NODE_RANK/MASTER_ADDR/MASTER_PORT.
The run's whole output goes to ``runs/<RUN>/logs/``, the console gets a short view of it and a
summary at the end (``megatron_ext.console``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from megatron_ext import faults, regularizers
from megatron_ext.config import megatron_flags, te_available
from megatron_ext.console import run_logged
from megatron_ext.device import cluster_without_gpu
from megatron_ext.jreg import layer_weights, parse_schedule
from megatron_ext.memory import available_memory, check_fits
from megatron_ext.resume import last_checkpoint
from recipes.models import model_recipe
from recipes.training import parallel_defaults, train_recipe

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = "data/default"
SHUTDOWN_TIMEOUT_S = 900  # after a signal, seconds torchrun waits for the ranks' checkpoint save
VARIABLES = {
    "RUN": "run name under runs/, or a path (default: <SIZE>-<REG>)",
    "SIZE": "model recipe: tiny 125m 350m 1b 3b 8b study (default tiny)",
    "REG": f"{' | '.join(regularizers.choices())} (default jreg; megatron_ext/regularizers/)",
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
    "COLLECTIVE_TIMEOUT": "seconds a collective may wait once training runs (default "
                          f"{faults.DEFAULT_COLLECTIVE_TIMEOUT_S})",
    "CKPT_FALLBACK": "1: set an unreadable latest checkpoint aside, resume from the newest readable",
    "ALLOW_DATA_CHANGE": "1: resume on a dataset whose fingerprint differs from the run's",
    "FORCE_CPU": "1: train on CPU even when the memory estimate says it cannot fit",
    "TIME_LIMIT": "stop with a checkpoint after this long: minutes or H:MM:SS (jobs: walltime - margin)",
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


def time_limit_minutes(v: dict) -> int | None:
    """TIME_LIMIT as whole minutes (Megatron's --exit-duration-in-mins is an integer)."""
    if "TIME_LIMIT" not in v:
        return None
    text = v["TIME_LIMIT"]
    parts = text.split(":")
    if len(parts) > 3 or not all(x.isdigit() for x in parts):
        raise LaunchError(
            f"TIME_LIMIT must be minutes or H:MM:SS, e.g. 90 or 23:50:00, got {text!r}"
        )
    if len(parts) == 1:
        minutes = int(parts[0])
    else:
        h, m, sec = ([int(x) for x in parts] + [0])[:3]
        minutes = h * 60 + m + sec // 60
    if minutes < 1:
        raise LaunchError(f"TIME_LIMIT must be at least 1 minute, got {text!r}")
    return minutes


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
    if reg not in regularizers.choices():
        raise LaunchError(f"unknown REG {reg!r}; valid: {', '.join(regularizers.choices())}")
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
    if not num_gpus and v.get("DRY_RUN", "0") in ("0", ""):
        import torch

        refusal = cluster_without_gpu(0, nnodes, os.environ, torch.version.cuda)
        if refusal:
            raise LaunchError(refusal)
    use_te = bool(num_gpus) and te_available()
    defaults = parallel_defaults(size, num_gpus)
    try:
        layout = dataclasses.replace(
            defaults, tp=_int(v, "TP", defaults.tp), pp=_int(v, "PP", defaults.pp),
            vpp=_int(v, "VPP", defaults.vpp), cp=_int(v, "CP", defaults.cp),
            # TP>1 splits activations over TP ranks (SP) where the norm allows it: the torch norm
            # of the local spec asserts `not sequence_parallel` (torch_norm.py:50) on GPUs.
            sequence_parallel=None if (use_te or not num_gpus) else False,
        )  # fmt: skip
        model.check_layout(layout.tp, layout.pp, layout.vpp)
        layout.check_world(nproc * nnodes)
    except ValueError as err:
        raise LaunchError(str(err)) from None
    if layout.cp > 1 and not use_te:
        raise LaunchError("CP>1 needs Transformer Engine on GPUs (local attention has no CP)")

    fp8 = v.get("FP8", "hybrid" if (use_te and capability >= 9) else "off")
    if fp8 not in ("off", "hybrid"):
        raise LaunchError(f"FP8 must be off or hybrid, got {fp8!r}")
    if fp8 == "hybrid" and not use_te:
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
    run = v.get("RUN", f"{size}-{reg}")
    run_dir = Path(run) if "/" in run else REPO / "runs" / run  # a name, or a path
    run_dir = run_dir if run_dir.is_absolute() else REPO / run_dir
    data, manifest, fallback = check_faults(v, run_dir)
    data_vocab = int(manifest["tokenizer"]["vocab_size"])
    extra = shlex.split(v.get("ARGS", ""))
    refusal = jreg_incompatible(extra, use_te)
    if refusal:
        raise LaunchError(refusal)
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
        "run_dir": run_dir, "seed": _int(v, "SEED", 1234), "extra": extra, "use_te": use_te,
        "model_vocab": model_vocab, "asked_batch": asked_batch, "fallback": fallback,
        "collective_timeout": _int(v, "COLLECTIVE_TIMEOUT", faults.DEFAULT_COLLECTIVE_TIMEOUT_S),
        "time_limit": time_limit_minutes(v),
        "defaults_used": not any(k in v for k in ("TP", "PP", "VPP", "CP")),
    }  # fmt: skip


def check_faults(v: dict, run_dir: Path) -> tuple[Path, dict, tuple | None]:
    """The dataset (refused if it vanished or changed under a resumed run) and the latest
    checkpoint (refused if unreadable, unless CKPT_FALLBACK=1: then what to set aside; also for a
    finished run, so that a damaged final checkpoint is named before anything reads it)."""
    record = run_dir / "launch.json"
    old = json.loads(record.read_text()) if record.is_file() else {}
    try:
        data, manifest = load_dataset(v)
    except LaunchError as err:
        raise LaunchError(f"{err}{faults.missing_data_hint(old)}") from None
    resuming = faults.last_checkpoint(run_dir / "checkpoints") is not None
    try:
        if resuming:
            faults.check_data(old, data, manifest, run=str(run_dir),
                              allow=v.get(faults.ALLOW_DATA_CHANGE, "0") not in ("0", ""))  # fmt: skip
        fallback = faults.check_checkpoint(
            run_dir / "checkpoints", fallback=v.get(faults.CKPT_FALLBACK, "0") not in ("0", "")
        )
    except faults.FaultError as err:
        raise LaunchError(str(err)) from None
    return data, manifest, fallback


def _flag_value(flags: list[str], name: str) -> str | None:
    """The value given to ``name`` in a flag list (last one wins), if any."""
    value = None
    for i, flag in enumerate(flags):
        if flag == name and i + 1 < len(flags):
            value = flags[i + 1]
        elif flag.startswith(name + "="):
            value = flag.split("=", 1)[1]
    return value


def _flag_values(flags: list[str], name: str) -> list[str]:
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
    modules = set(_flag_values(extra, "--offload-modules"))
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


def completed_iteration(p: dict) -> int | None:
    """The run's latest checkpoint iteration when it already reached ITERS (nothing to train).
    None when CKPT_FALLBACK sets that checkpoint aside: the run resumes from an older one."""
    if p.get("fallback"):
        return None
    done = last_checkpoint(p["run_dir"] / "checkpoints")
    return done if done is not None and done >= p["train"].train_iters else None


def check_cpu_memory(p: dict, available: int) -> None:
    """Refuse a CPU run whose estimated memory (all ranks of this node) exceeds ``available``."""
    extra = p["extra"]
    try:
        check_fits(
            p["size"], nproc=p["nproc"], tp=p["layout"].tp, pp=p["layout"].pp,
            vocab=p["model_vocab"], available=available,
            micro_batch_size=_flag_value(extra, "--micro-batch-size"),
            seq_length=_flag_value(extra, "--seq-length"),
            full_recompute=_flag_value(extra, "--recompute-granularity") == "full",
        )  # fmt: skip
    except ValueError as err:
        raise LaunchError(str(err)) from None


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
        "--distributed-timeout-seconds-after-init", str(p["collective_timeout"]),
        "--exit-signal-handler",  # SIGTERM (and SIGINT, megatron_ext.stop): save, then exit
    ]  # fmt: skip
    if p["time_limit"]:
        flags += ["--exit-duration-in-mins", str(p["time_limit"])]
    if p["num_gpus"]:
        flags += gpu_flags(p)
    else:
        flags += [
            "--distributed-backend", "gloo", "--transformer-impl", "local",
            "--use-cpu-initialization", *NO_APEX_FLAGS, "--no-bias-swiglu-fusion",
            "--no-bias-dropout-fusion",
        ]  # fmt: skip
    return flags + p["extra"]


# Fused kernels that need Apex (never installed here) or Transformer Engine: off for the local
# spec. persist_layer_norm and memory-efficient LN: Apex's FusedLayerNorm (torch_norm.py:48);
# gradient-accumulation fusion: Apex/TE's fused wgrad kernel (tensor_parallel/layers.py:1071);
# RoPE fusion: TE's fused_apply_rotary_pos_emb (rope_utils.py:21); masked-softmax fusion:
# Megatron's CUDA softmax kernels, absent from the wheel. (The bias-SwiGLU and bias-dropout
# fusions are torch.jit: they run on a GPU, and are switched off on CPU only.)
NO_APEX_FLAGS = [
    "--no-persist-layer-norm", "--no-gradient-accumulation-fusion", "--no-rope-fusion",
    "--no-masked-softmax-fusion",
]  # fmt: skip
# Collectives may wait this long: rank 0 builds the GPTDataset indices (sample/shuffle index of
# billions of tokens, minutes on a large corpus) while every other rank waits in a barrier, and
# Megatron's default of 10 minutes kills such a job before its first step.
DIST_TIMEOUT_MINUTES = 60


def gpu_flags(p: dict) -> list[str]:
    """bf16, TE or local spec, FP8, and the H200 throughput options (README "Throughput")."""
    flags = ["--bf16", "--distributed-timeout-minutes", str(DIST_TIMEOUT_MINUTES)]
    if p["use_te"]:
        flags += ["--transformer-impl", "transformer_engine"]
        if p["fp8"] == "hybrid":
            flags += ["--fp8-format", "hybrid", "--fp8-recipe", "tensorwise"]
    else:
        # A GPU without Transformer Engine (plain `make setup`): local spec, no Apex fusions.
        flags += ["--transformer-impl", "local", *NO_APEX_FLAGS]
    # Megatron's fused vocab-parallel cross entropy (its own kernel, no TE needed): one pass
    # over the [s, b, vocab] logits instead of several, less memory for a 128k vocabulary.
    flags += ["--cross-entropy-loss-fusion", "--cross-entropy-fusion-impl", "native"]
    # Python's GC at the same iterations on every rank: an unsynchronised collection pause on
    # one rank stalls all others at the next collective.
    flags += ["--manual-gc", "--manual-gc-interval", "100"]
    if p["layout"].distributed_optimizer:
        # Reduce-scatter gradients bucket by bucket during backward and all-gather parameters
        # during the next forward, instead of after/before: DP communication hidden by compute.
        flags += ["--overlap-grad-reduce", "--overlap-param-gather"]
    return flags


def command(p: dict, v: dict) -> list[str]:
    """torchrun for this node; a single process runs the entry point directly (run_env sets the
    rendezvous variables). The launcher forwards SIGINT/SIGTERM to it (megatron_ext.console).
    ``megatron_ext.torchrun`` is torchrun without its traceback on SIGINT/SIGTERM; it gives the
    ranks SHUTDOWN_TIMEOUT_S to save their checkpoint after it forwards the signal (torchrun's
    default: 30 s)."""
    if p["nproc"] * p["nnodes"] == 1:
        return [sys.executable, "-m", "megatron_ext.train", *megatron_args(p)]
    rdzv = ["--nnodes", str(p["nnodes"]), "--node-rank", v.get("NODE_RANK", "0"),
            "--master-addr", v.get("MASTER_ADDR", "127.0.0.1"),
            "--master-port", v.get("MASTER_PORT", str(_free_port()))]  # fmt: skip
    return [sys.executable, "-m", "megatron_ext.torchrun", "--nproc-per-node", str(p["nproc"]),
            *rdzv, "--shutdown-timeout", str(SHUTDOWN_TIMEOUT_S),
            "-m", "megatron_ext.train", *megatron_args(p)]  # fmt: skip


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
        # one intra-op thread per rank: on the shared 2-core VM 2 threads made a step >10x slower
        # (docs/benchmarks.md); OMP_NUM_THREADS in the environment wins
        env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def describe_weights(p: dict) -> str:
    """The resolved layer weights w_1..w_L, as the regulariser uses them (none for REG=none)."""
    if p["reg"] == "none":
        return ""
    name, kw = parse_schedule(p["weights"])
    w = layer_weights(p["model"].num_layers, name, **kw).tolist()
    return f" [w_1..w_{len(w)}: {' '.join(f'{x:.4g}' for x in w)}]"


def describe(p: dict) -> str:
    layout = p["layout"]
    where = f"{p['num_gpus']} GPU(s)" if p["num_gpus"] else "CPU (gloo)"
    picked = " (defaults for this size)" if p["defaults_used"] else ""
    batch = p["train"].global_batch_size
    rounded = "" if batch == p["asked_batch"] else f" (recipe's {p['asked_batch']} rounded to DP)"
    return (
        f"pretrain SIZE={p['size']} REG={p['reg']} LAMBDA={p['lam']} WEIGHTS={p['weights']}"
        f"{describe_weights(p)} on "
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
    dry_run = v.get("DRY_RUN", "0") not in ("0", "")
    done = completed_iteration(p)
    if done is not None and not dry_run:
        print(
            f"run complete: iteration {done} of {p['train'].train_iters} in {p['run_dir']}; "
            "nothing to do (to train further: a larger ITERS=... with "
            "ARGS=--override-opt_param-scheduler)",
            flush=True,
        )
        return 0
    if not (p["num_gpus"] or dry_run or v.get("FORCE_CPU", "0") not in ("0", "")):
        try:
            check_cpu_memory(p, available_memory())
        except LaunchError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    print(describe(p), flush=True)
    if dry_run:
        print(shlex.join(cmd))
        return 0
    p["run_dir"].mkdir(parents=True, exist_ok=True)
    if v.get("NODE_RANK", "0") == "0":  # one writer per run, also on a shared multi-node FS
        if p["fallback"]:
            bad, good, problem = p["fallback"]
            for path in faults.fall_back(p["run_dir"] / "checkpoints", bad, good):
                print(f"set aside an unreadable checkpoint ({problem}): {path}", flush=True)
            print(f"resuming from iter_{good:07d}, the newest readable checkpoint", flush=True)
        old_record = p["run_dir"] / "launch.json"
        old_record = json.loads(old_record.read_text()) if old_record.is_file() else {}
        (p["run_dir"] / "command.txt").write_text(shlex.join(cmd) + "\n")
        record = {
            "size": p["size"],
            "train_iters": p["train"].train_iters,
            "vocab": p["model_vocab"],
            **faults.data_record(old_record, p["data"], p["manifest"]),
        }
        (p["run_dir"] / "launch.json").write_text(json.dumps(record) + "\n")
    log = log_path(p["run_dir"], v)
    print(f"log: {_show(log)} (all output; arguments: {_show(p['run_dir'] / 'arguments.txt')})")
    started = time.time()
    # Several processes: the last line of a failed run is ours (faults.TorchrunWatch).
    watch = (
        faults.TorchrunWatch(p["run_dir"] / "checkpoints") if p["nproc"] * p["nnodes"] > 1 else None
    )
    return run_logged(
        cmd, run_env(p, v), log, header=[describe(p), shlex.join(cmd)],
        on_success=lambda: summary(p, v, log, time.time() - started), watch=watch,
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


def summary(p: dict, v: dict, log: Path, seconds: float) -> list[str]:
    """What the run left and what to run next (printed after a successful run, node 0 only)."""
    if v.get("NODE_RANK", "0") != "0":
        return []
    run_dir = p["run_dir"]
    tracker = run_dir / "checkpoints" / "latest_checkpointed_iteration.txt"
    latest = tracker.read_text().strip() if tracker.is_file() else "none"
    lines = []
    metrics = run_dir / "metrics.jsonl"
    for text in metrics.read_text().splitlines() if metrics.is_file() else []:
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:
            continue
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
    return [
        f"done in {seconds / 60:.1f} min: {p['train'].train_iters} iterations of {rd}",
        f"  checkpoints  {rd}/checkpoints (latest iteration {latest})",
        f"  metrics      {rd}/metrics.jsonl, TensorBoard {rd}/tensorboard, W&B {rd}/wandb",
        f"  logs         {_show(log)}, arguments {rd}/arguments.txt",
        f"  lm loss      {', '.join(finals) or 'none logged'}",
        f"  next         make analyze RUN={run_arg}; make plots RUN={run_arg}; "
        f"make eval RUN={run_arg}",
    ]


if __name__ == "__main__":
    sys.exit(main())
