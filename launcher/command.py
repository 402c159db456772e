"""The command a plan becomes: Megatron's flags, torchrun for several processes, the environment."""

from __future__ import annotations

import os
import sys

from common.files import REPO
from common.ports import free_port
from launcher import wandb_run
from launcher.data import SPLITS, Dataset
from launcher.planner import Plan
from megatron_ext import sd_settings
from megatron_ext.config import megatron_flags

SHUTDOWN_TIMEOUT_S = 900  # after a signal, seconds torchrun waits for the ranks' checkpoint save

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


def megatron_args(p: Plan) -> list[str]:
    """The full flag list for ``python -m megatron_ext.train``."""
    model, layout, run_dir = p.model, p.layout, p.run_dir
    tok_dir = p.datasets[0].tokenizer_dir
    flags = (
        megatron_flags(model) + p.train.megatron_flags() + layout.megatron_flags(model.num_layers)
    )
    flags += data_flags(p.datasets)
    flags += [
        "--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", str(tok_dir),
        "--vocab-size", str(p.model_vocab),
        "--make-vocab-size-divisible-by", "1",
        "--seed", str(p.seed),
        "--save", str(run_dir / "checkpoints"), "--load", str(run_dir / "checkpoints"),
        "--ckpt-format", "torch_dist",
        "--tensorboard-dir", str(run_dir / "tensorboard"), "--tensorboard-log-interval", "1",
        "--log-timers-to-tensorboard", "--log-validation-ppl-to-tensorboard",
        *wandb_run.flags(run_dir, os.environ),
        "--jreg-reg", p.reg, "--jreg-lambda", str(p.lam), "--jreg-weights", p.weights,
        *sd_settings.flags(p.selfdistill),
        "--run-dir", str(run_dir),
        "--distributed-timeout-seconds-after-init", str(p.collective_timeout),
        "--exit-signal-handler",  # SIGTERM (and SIGINT, megatron_ext.stop): save, then exit
    ]  # fmt: skip
    if p.init:  # used only while the run has no checkpoint of its own (launcher.init)
        flags += ["--pretrained-checkpoint", str(p.init)]
    if p.time_limit:
        flags += ["--exit-duration-in-mins", str(p.time_limit)]
    if p.num_gpus:
        flags += gpu_flags(p)
    else:
        flags += [
            "--distributed-backend", "gloo", "--transformer-impl", "local",
            "--use-cpu-initialization", *NO_APEX_FLAGS, "--no-bias-swiglu-fusion",
            "--no-bias-dropout-fusion",
        ]  # fmt: skip
    return flags + p.extra


def data_flags(datasets: list[Dataset]) -> list[str]:
    """``--{train,valid,test}-data-path``: the prefix, or for a blend Megatron's per-split
    ``W1 PREFIX1 W2 PREFIX2 ...`` (``get_blend_from_list``, megatron/core/datasets/utils.py:49;
    its BlendedDataset draws each split's samples from the members in these proportions)."""
    flags = []
    for split in SPLITS:
        if len(datasets) == 1:
            words = [datasets[0].prefixes()[split]]
        else:
            words = [w for d in datasets for w in (f"{d.weight:.6g}", d.prefixes()[split])]
        flags += [f"--{split}-data-path", *words]
    return flags


def gpu_flags(p: Plan) -> list[str]:
    """bf16, TE or local spec, FP8, and the H200 throughput options (README "Throughput")."""
    flags = ["--bf16", "--distributed-timeout-minutes", str(DIST_TIMEOUT_MINUTES)]
    if p.use_te:
        # cuDNN fused attention, chosen rather than left to TE: with the default (auto) TE may
        # fall back to its unfused attention for a shape cuDNN declines, silently several times
        # slower; chosen, it fails loudly instead (Megatron sets NVTE_FUSED_ATTN=1 and the other
        # two to 0: language_module.py:131). flash-attn is not in the lock.
        flags += ["--transformer-impl", "transformer_engine", "--attention-backend", "fused"]
        if not p.grad_accum_fusion:
            # Megatron's own output layer (ColumnParallelLinear, also under TE) raises at
            # construction without Apex's fused wgrad kernel (tensor_parallel/layers.py:1070)
            flags.append("--no-gradient-accumulation-fusion")
        if p.fp8 == "hybrid":
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
    if p.layout.distributed_optimizer:
        # Reduce-scatter gradients bucket by bucket during backward and all-gather parameters
        # during the next forward, instead of after/before: DP communication hidden by compute.
        flags += ["--overlap-grad-reduce", "--overlap-param-gather"]
    return flags


def command(p: Plan, v: dict) -> list[str]:
    """torchrun for this node; a single process runs the entry point directly (run_env sets the
    rendezvous variables). The launcher forwards SIGINT/SIGTERM to it (launcher.console).
    ``launcher.torchrun`` is torchrun without its traceback on SIGINT/SIGTERM; it gives the
    ranks SHUTDOWN_TIMEOUT_S to save their checkpoint after it forwards the signal (torchrun's
    default: 30 s)."""
    if p.world_size == 1:
        return [sys.executable, "-m", "megatron_ext.train", *megatron_args(p)]
    rdzv = ["--nnodes", str(p.nnodes), "--node-rank", v.get("NODE_RANK", "0"),
            "--master-addr", v.get("MASTER_ADDR", "127.0.0.1"),
            "--master-port", v.get("MASTER_PORT", str(free_port()))]  # fmt: skip
    return [sys.executable, "-m", "launcher.torchrun", "--nproc-per-node", str(p.nproc),
            *rdzv, "--shutdown-timeout", str(SHUTDOWN_TIMEOUT_S),
            "-m", "megatron_ext.train", *megatron_args(p)]  # fmt: skip


def run_env(p: Plan, v: dict) -> dict[str, str]:
    env = dict(os.environ)
    if p.world_size == 1:
        env.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
        env.setdefault("MASTER_ADDR", v.get("MASTER_ADDR", "127.0.0.1"))
        env.setdefault("MASTER_PORT", v.get("MASTER_PORT", str(free_port())))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONDONTWRITEBYTECODE"] = ""  # Megatron recompiles ~3,500 modules per start otherwise
    # W&B: offline unless the user asked for online (WANDB_MODE or an API key).
    if "WANDB_MODE" not in env and "WANDB_API_KEY" not in env:
        env["WANDB_MODE"] = "offline"
    env.setdefault("WANDB_SILENT", "true")
    env.update(wandb_run.environment(p.run_dir, env))  # one W&B run per training run
    if p.num_gpus:
        env.setdefault("CUDA_DEVICE_MAX_CONNECTIONS", "1")  # TP/SP comm-compute ordering
    else:
        # one intra-op thread per rank: on the shared 2-core VM 2 threads made a step >10x slower
        # (docs/benchmarks.md); OMP_NUM_THREADS in the environment wins
        env.setdefault("OMP_NUM_THREADS", "1")
    return env
