"""The settings resolved into a typed ``Plan``: model, schedule, layout, data and run directory.

``plan`` validates every setting (each failure a ``LaunchError``) and decides everything the
command, the checks and the records need; nothing later re-reads the settings for those.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from common.files import run_dir as resolve_run_dir
from common.settings import DEFAULT_REG, DEFAULT_SEED, DEFAULT_SIZE, DEFAULT_WEIGHTS, flag_on
from launcher.checks import check_faults, check_resume, flag_value, jreg_incompatible
from launcher.data import Dataset, check_args
from launcher.gpu import fit_batch, local_attention_micro_batch, te_choice
from launcher.init import check_tokenizer, init_model, load_init
from launcher.settings import LaunchError, int_var, lambda_var, reg_names, time_limit_minutes
from megatron_ext import faults, sd_settings
from megatron_ext.config import (
    LlamaConfig,
    ParallelConfig,
    TrainConfig,
    apex_wgrad_available,
    te_available,
    te_import_error,
)
from megatron_ext.device import cluster_without_gpu
from megatron_ext.resume import last_checkpoint
from megatron_ext.schedules import parse_schedule
from megatron_ext.schedules import weights as layer_weights
from recipes import CONTINUED, parallel_defaults, size_recipe, train_recipe


@dataclass(kw_only=True)
class Plan:
    """Everything one ``make pretrain`` decided (on this node)."""

    size: str
    """SIZE: the entry of the size table (``recipes.SIZES``)."""
    schedule: str
    """TRAIN: the training recipe, a size's name or ``continued`` (``recipes.train_recipe``)."""
    reg: str
    """REG: the regulariser's name."""
    lam: float
    """LAMBDA."""
    weights: str
    """WEIGHTS: the layer-weight schedule as written (``exp:0.25``)."""
    model: LlamaConfig
    """The architecture (the size's, before ARGS)."""
    train: TrainConfig
    """The schedule with ITERS/SAVE_INTERVAL/LOG_INTERVAL and the batch fitted to DP."""
    layout: ParallelConfig
    """TP/PP/VPP/CP/SP and the distributed optimizer."""
    nproc: int
    """Processes on this node."""
    nnodes: int
    """Nodes."""
    num_gpus: int
    """GPUs visible (or planned with PLAN_GPUS); 0 on a CPU machine."""
    use_te: bool
    """Transformer Engine spec (GPUs where TE imports; launcher.gpu.te_choice)."""
    te_problem: str | None
    """Why TE is not used on GPUs (not installed, failed import, TE=0); None when it is."""
    preview: bool
    """Planned for GPUs this machine lacks (PLAN_GPUS): the command a GPU node would run."""
    grad_accum_fusion: bool
    """Megatron's gradient-accumulation fusion: only with Apex's kernel (apex_wgrad_available)."""
    fp8: str
    """``off`` or ``hybrid``."""
    datasets: list[Dataset]
    """DATA: the prepared dataset, or a weighted blend's members (``launcher.data``)."""
    data: Path
    """The dataset whose tokenizer the run uses: DATA's folder, a blend's first member."""
    manifest: dict
    """Its ``manifest.json``."""
    data_vocab: int
    """The dataset tokenizer's vocabulary."""
    model_vocab: int
    """The padded model vocabulary (embedding rows; ``--vocab-size``)."""
    run_dir: Path
    """The run directory."""
    seed: int
    """SEED."""
    extra: list[str]
    """ARGS, split into words (passed to Megatron last)."""
    asked_micro_batch: int
    """The recipe's micro batch before it was fitted to DP (launcher.gpu.fit_batch)."""
    fallback: tuple | None
    """CKPT_FALLBACK: (unreadable iteration, readable iteration, problem), else None."""
    collective_timeout: int
    """COLLECTIVE_TIMEOUT in seconds."""
    time_limit: int | None
    """TIME_LIMIT in minutes, or None."""
    defaults_used: bool
    """No TP/PP/VPP/CP given: the size's layout."""
    micro_reason: str = "to split the batch over DP"
    """Why the micro batch differs from the recipe's (when it does)."""
    init: Path | None = None
    """INIT=: the imported model's folder (``launcher.init``), else None."""
    selfdistill: dict | None = None
    """REG=selfdistill: the SD_* settings given (SelfDistillConfig fields), else None."""

    @property
    def world_size(self) -> int:
        """Processes over all nodes."""
        return self.nproc * self.nnodes


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
    if not gpu_device_files():
        return 0, 0
    import torch

    if not torch.cuda.is_available():
        return 0, 0
    return torch.cuda.device_count(), torch.cuda.get_device_capability(0)[0]


# A CUDA driver talks to the GPU through one of these (bare metal/containers, WSL2, Jetson; ROCm
# builds of torch: /dev/kfd). Without any of them torch.cuda.is_available() cannot be True, and
# the launcher skips importing torch (~1.3 s of every CPU launch, DRY_RUN and bad input included).
GPU_DEVICE_FILES = (
    "/dev/nvidiactl",
    "/dev/nvidia0",
    "/dev/dxg",
    "/dev/nvhost-ctrl-gpu",
    "/dev/kfd",
)


def gpu_device_files() -> list[str]:
    """The GPU driver device files present on this machine."""
    return [f for f in GPU_DEVICE_FILES if os.path.exists(f)]


def gpu_memory() -> int | None:
    """Bytes of memory of GPU 0; None where torch sees no GPU (a plan for another machine)."""
    if not gpu_device_files():
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory


def padded_vocab(vocab_size: int, tp: int) -> int:
    """Vocab padded to a multiple of 1024 (and of 128 x TP beyond TP=8): the same for every
    TP <= 8, so runs with different layouts build the same embedding and output layer."""
    multiple = max(1024, 128 * tp)
    return -(-vocab_size // multiple) * multiple


def plan(v: dict) -> Plan:
    """Validate every setting and derive the full plan; raises LaunchError."""
    size = v.get("SIZE", DEFAULT_SIZE)
    reg = v.get("REG", DEFAULT_REG)
    schedule = v.get("TRAIN", CONTINUED if v.get("INIT") else size)
    try:
        model, train = size_recipe(size).model(), train_recipe(size, schedule)
    except ValueError as err:
        raise LaunchError(str(err)) from None
    init_dir, init_record = load_init(v["INIT"]) if v.get("INIT") else (None, None)
    if init_record:
        model = init_model(init_record, model.seq_length)
    if reg not in reg_names():
        raise LaunchError(f"unknown REG {reg!r}; valid: {', '.join(reg_names())}")
    lam = lambda_var(v)
    try:
        selfdistill = sd_settings.parse(v, reg)
    except ValueError as err:
        raise LaunchError(str(err)) from None
    weights = v.get("WEIGHTS", DEFAULT_WEIGHTS)
    try:
        name, kw = parse_schedule(weights)
        layer_weights(model.num_layers, name, **kw)
    except ValueError as err:
        raise LaunchError(f"WEIGHTS={weights}: {err}") from None

    num_gpus, capability = gpu_info()
    nproc = int_var(v, "NPROC", num_gpus or 1)
    nnodes = int_var(v, "NNODES", 1)
    if not num_gpus and not flag_on(v, "DRY_RUN") and cluster_without_gpu(0, nnodes):
        import torch  # only here: the line names the CUDA that torch was built for

        raise LaunchError(cluster_without_gpu(0, nnodes, os.environ, torch.version.cuda))
    preview = bool(os.environ.get("PLAN_GPUS"))
    te_problem = None
    if num_gpus:
        if v.get("TE") == "0":
            te_problem = "TE=0"
        elif preview:
            te_problem = None if te_available() else "transformer_engine is not installed here"
        else:
            te_problem = te_import_error()
    use_te = te_choice(v.get("TE", "auto"), num_gpus=num_gpus, capability=capability,
                       problem=te_problem, preview=preview)  # fmt: skip
    defaults = parallel_defaults(size, num_gpus)
    try:
        layout = dataclasses.replace(
            defaults, tp=int_var(v, "TP", defaults.tp), pp=int_var(v, "PP", defaults.pp),
            vpp=int_var(v, "VPP", defaults.vpp), cp=int_var(v, "CP", defaults.cp),
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
        train_iters=int_var(v, "ITERS", train.train_iters),
        save_interval=int_var(v, "SAVE_INTERVAL", train.save_interval),
        log_interval=int_var(v, "LOG_INTERVAL", train.log_interval),
    )
    extra = shlex.split(v.get("ARGS", ""))
    check_args(extra)
    if selfdistill is not None:
        refusal = sd_settings.refusal(
            pp=int(flag_value(extra, "--pipeline-model-parallel-size") or layout.pp),
            vpp=layout.vpp, cp=int(flag_value(extra, "--context-parallel-size") or layout.cp),
            recompute=flag_value(extra, "--recompute-granularity"),
            teacher=selfdistill.get("teacher", "self"), init=init_dir is not None,
        )  # fmt: skip
        if refusal:
            raise LaunchError(refusal)
    dp = nproc * nnodes // layout.model_parallel_size
    asked_micro = train.micro_batch_size
    train = _fit_batch(train, dp, extra)
    run_dir = resolve_run_dir(v.get("RUN", f"{size}-{reg}"))
    datasets, fallback = check_faults(v, run_dir)
    data, manifest = datasets[0].path, datasets[0].manifest
    data_vocab = int(manifest["tokenizer"]["vocab_size"])
    refusal = jreg_incompatible(extra, use_te)
    if refusal:
        raise LaunchError(refusal)
    model_vocab = flag_value(extra, "--vocab-size")
    model_vocab = int(model_vocab) if model_vocab else padded_vocab(data_vocab, layout.tp)
    if init_record:
        check_tokenizer(init_record, datasets[0].tokenizer_dir, data_vocab)
        model_vocab = init_record["vocab_size"]
    if data_vocab > model_vocab:
        raise LaunchError(
            f"the dataset's tokenizer has {data_vocab} tokens but the model's vocabulary is "
            f"{model_vocab}; drop --vocab-size from ARGS or raise it to at least {data_vocab}"
        )
    micro_reason = "to split the batch over DP"
    # on the node itself: a login node's preview lacks TE where the compute nodes have it
    if num_gpus and not use_te and not preview:
        train, micro_reason = _fit_local_attention(model, train, extra, dp, layout, model_vocab)
    check_resume(run_dir, size=size, train_iters=train.train_iters, vocab=model_vocab,
                 overriding="--override-opt_param-scheduler" in extra)  # fmt: skip
    return Plan(
        size=size, schedule=schedule, reg=reg, lam=lam, weights=weights, model=model, train=train, layout=layout,
        nproc=nproc, nnodes=nnodes, num_gpus=num_gpus, use_te=use_te,
        te_problem=None if use_te else te_problem, preview=preview,
        # REG=selfdistill: off (the fused wgrad would drop the lens's gradient, sd_settings)
        grad_accum_fusion=bool(num_gpus) and apex_wgrad_available() and selfdistill is None,
        fp8=fp8, datasets=datasets,
        data=data,
        manifest=manifest, data_vocab=data_vocab, model_vocab=model_vocab, run_dir=run_dir,
        seed=int_var(v, "SEED", DEFAULT_SEED), extra=extra, asked_micro_batch=asked_micro,
        fallback=fallback,
        collective_timeout=int_var(v, "COLLECTIVE_TIMEOUT", faults.DEFAULT_COLLECTIVE_TIMEOUT_S),
        time_limit=time_limit_minutes(v),
        defaults_used=not any(k in v for k in ("TP", "PP", "VPP", "CP")),
        micro_reason=micro_reason, init=init_dir, selfdistill=selfdistill,
    )  # fmt: skip


def _fit_batch(train: TrainConfig, dp: int, extra: list[str]) -> TrainConfig:
    """The schedule's batch over ``dp`` ranks (launcher.gpu.fit_batch), from the ARGS batch
    sizes when given (they reach Megatron last and win): a micro batch given there is kept."""
    global_batch = int(flag_value(extra, "--global-batch-size") or train.global_batch_size)
    asked_micro = flag_value(extra, "--micro-batch-size")
    if asked_micro and global_batch % (int(asked_micro) * dp):
        raise LaunchError(
            f"ARGS --micro-batch-size {asked_micro} x DP {dp} does not divide the global batch of "
            f"{global_batch} sequences; drop it (the launcher picks one that does) or change it"
        )
    micro, global_batch = fit_batch(global_batch, int(asked_micro or train.micro_batch_size), dp)
    return train.replace(micro_batch_size=micro, global_batch_size=global_batch)


def _fit_local_attention(model, train: TrainConfig, extra: list[str], dp: int, layout,
                         vocab: int) -> tuple[TrainConfig, str]:  # fmt: skip
    """GPUs without TE: the micro batch lowered until unfused attention fits the GPU
    (launcher.gpu.local_attention_micro_batch); ARGS' micro batch or recompute is left alone."""
    reason = "to split the batch over DP"
    if any(flag_value(extra, f) for f in ("--micro-batch-size", "--recompute-granularity")):
        return train, reason
    gpu_bytes = gpu_memory()
    if gpu_bytes is None:
        return train, reason
    seq = flag_value(extra, "--seq-length")
    fitted = local_attention_micro_batch(
        model.replace(seq_length=int(seq)) if seq else model, micro=train.micro_batch_size,
        global_batch=train.global_batch_size, dp=dp, gpu_bytes=gpu_bytes, vocab=vocab,
        tp=layout.tp, pp=layout.pp, cp=layout.cp, distributed_optimizer=layout.distributed_optimizer,
    )  # fmt: skip
    if fitted == train.micro_batch_size:
        return train, reason
    return train.replace(micro_batch_size=fitted), "to fit unfused attention (no TE) in GPU memory"


def completed_iteration(p: Plan) -> int | None:
    """The run's latest checkpoint iteration when it already reached ITERS (nothing to train).
    None when CKPT_FALLBACK sets that checkpoint aside: the run resumes from an older one."""
    if p.fallback:
        return None
    done = last_checkpoint(p.run_dir / "checkpoints")
    return done if done is not None and done >= p.train.train_iters else None
