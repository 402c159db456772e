"""Training entry point: Megatron-LM's ``pretrain()`` with JREG (``python -m megatron_ext.train``).

Takes every Megatron-LM flag plus the ``--jreg-*`` and ``--run-dir`` flags below, reads Megatron's
args once here and passes plain config down: the JREG layer spec and loss-scale hook, the
layout-invariant initialisation (a pre-wrap hook), the run logger (the finalize-grads hook) and the
dataset provider. ``launcher`` (``make pretrain``) builds the command line.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from common.settings import DEFAULT_LAMBDA, DEFAULT_REG, DEFAULT_WEIGHTS
from megatron_ext import cpu_compat, megatron_compat, regularizers, sd_settings
from megatron_ext.console import say

ON_CPU = cpu_compat.enable(training=True)
megatron_compat.enable()

from megatron.core import parallel_state as ps  # noqa: E402
from megatron.core.datasets.gpt_dataset import GPTDatasetConfig  # noqa: E402
from megatron.core.distributed import finalize_model_grads  # noqa: E402
from megatron.core.enums import ModelType  # noqa: E402
from megatron.core.rerun_state_machine import (  # noqa: E402
    EXIT_CODE_FAILED_ON_RESULT_VALIDATION,
    EXIT_CODE_RESUME_TO_DISAMBIGUATE,
)
from megatron.training import get_args, get_tokenizer, pretrain  # noqa: E402
from megatron.training.argument_utils import (  # noqa: E402
    gpt_config_from_args,
    pretrain_cfg_container_from_args,
)
from megatron.training.arguments import parse_and_validate_args  # noqa: E402
from megatron.training.global_vars import get_tensorboard_writer, get_wandb_writer  # noqa: E402
from megatron.training.utils import get_blend_and_blend_per_split  # noqa: E402

from megatron_ext.device import rank_device  # noqa: E402
from megatron_ext.faults import report_failure  # noqa: E402
from megatron_ext.init import layout_invariant_init  # noqa: E402
from megatron_ext.jreg import parse_schedule  # noqa: E402
from megatron_ext.layer import jreg_layer_spec  # noqa: E402
from megatron_ext.nonfinite import is_nonfinite_error  # noqa: E402
from megatron_ext.reg import JregRuntime  # noqa: E402
from megatron_ext.regconfig import JregConfig  # noqa: E402
from megatron_ext.resume import last_checkpoint, set_aside_incomplete, supersede_metrics  # noqa: E402
from megatron_ext.runlog import RunLogger  # noqa: E402
from megatron_ext.sd_teacher import FrozenTeacher  # noqa: E402
from megatron_ext.selfdistill_train import SelfDistillRuntime  # noqa: E402
from megatron_ext.step import dataset_provider, make_forward_step  # noqa: E402
from megatron_ext.stop import install_sigint  # noqa: E402
from megatron_ext.stop import report as report_stop  # noqa: E402
from megatron_ext.tracker import JumpTracker  # noqa: E402
from megatron_ext.wandb_ckpt import install as guard_wandb_checkpoint_hook  # noqa: E402


def add_jreg_args(parser):
    """Our flags, next to Megatron-LM's (``extra_args_provider``)."""
    group = parser.add_argument_group("jreg")
    group.add_argument("--jreg-reg", default=DEFAULT_REG, choices=regularizers.choices())
    group.add_argument("--jreg-lambda", type=float, default=DEFAULT_LAMBDA)
    group.add_argument(
        "--jreg-weights", default=DEFAULT_WEIGHTS, help="schedule[:k], e.g. exp:0.25"
    )
    for field, flag, kind, text in sd_settings.SETTINGS.values():  # REG=selfdistill's (SD_*)
        group.add_argument(flag, type=kind, default=None, help=f"{text} ({field})")
    group.add_argument("--run-dir", required=True, help="where metrics.jsonl is written")
    # fault injection for the NaN-stop test; hidden from --help
    group.add_argument("--inject-nan-at-iteration", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def jreg_config(args) -> JregConfig:
    name, kw = parse_schedule(args.jreg_weights)
    sd = {field: getattr(args, flag[2:].replace("-", "_"))
          for field, flag, _, _ in sd_settings.SETTINGS.values()}  # fmt: skip
    sd = {k: v for k, v in sd.items() if v is not None}
    return JregConfig(
        reg=args.jreg_reg, lam=args.jreg_lambda, schedule=name, schedule_k=kw.get("k"),
        num_layers=args.num_layers,
        selfdistill=sd if args.jreg_reg == regularizers.SELFDISTILL else None,
    )  # fmt: skip


def selfdistill_refusal(args, jcfg: JregConfig) -> str | None:
    """Why REG=selfdistill cannot run with these args (``sd_settings.refusal``), or None."""
    if jcfg.selfdistill is None:
        return None
    return sd_settings.refusal(
        pp=args.pipeline_model_parallel_size, vpp=args.virtual_pipeline_model_parallel_size,
        cp=args.context_parallel_size, recompute=args.recompute_granularity,
        teacher=jcfg.selfdistill.teacher, init=args.pretrained_checkpoint is not None,
        grad_accum_fusion=args.gradient_accumulation_fusion,
    )  # fmt: skip


def frozen_teacher_factory(args, model_cfg, jcfg: JregConfig):
    """SD_TEACHER=frozen: builds INIT='s model as the teacher from the student (None else)."""
    if jcfg.selfdistill.teacher != "frozen":
        return None
    use_te = args.transformer_impl == "transformer_engine"

    def build(student):
        teacher = FrozenTeacher(model_cfg, args.pretrained_checkpoint, student, use_te=use_te)
        if args.rank == 0:
            say(f"SD_TEACHER=frozen: the teacher is {teacher.checkpoint}")
        return teacher

    return build


def gpt_dataset_config(args) -> GPTDatasetConfig:
    """As Megatron-LM's pretrain_gpt.py builds it from the data flags."""
    blend, blend_per_split = get_blend_and_blend_per_split(args)
    return GPTDatasetConfig(
        random_seed=args.seed,
        sequence_length=args.seq_length,
        blend=blend,
        blend_per_split=blend_per_split,
        split=args.split,
        path_to_cache=args.data_cache_path,
        mmap_bin_files=args.mmap_bin_files,
        tokenizer=get_tokenizer(),
        reset_position_ids=args.reset_position_ids,
        reset_attention_mask=args.reset_attention_mask,
        eod_mask_loss=args.eod_mask_loss,
        create_attention_mask=False,
        num_dataset_builder_threads=args.num_dataset_builder_threads,
    )


def layout_invariant_hook(args):
    """Pre-wrap hook: weights from (seed, parameter name) only, whatever the layout."""

    def hook(model_chunks):
        layout_invariant_init(
            model_chunks, seed=args.seed, std=args.init_method_std, num_layers=args.num_layers,
            tp_rank=ps.get_tensor_model_parallel_rank(),
            tp_size=ps.get_tensor_model_parallel_world_size(), gated=args.swiglu,
        )  # fmt: skip
        return model_chunks

    return hook


def writers() -> tuple:
    """Megatron's TensorBoard writer and W&B module (None once pretrain() has finished W&B)."""
    wandb = get_wandb_writer()
    return get_tensorboard_writer(), wandb if getattr(wandb, "run", None) is not None else None


def eval_steps_per_pass(args) -> int:
    """Forward steps one rank runs per evaluation pass (Megatron's evaluate()): eval_iters
    batches of eval_global_batch_size / (eval_micro_batch_size x DP) microbatches, per chunk."""
    dp = args.data_parallel_size
    microbatches = args.eval_global_batch_size // (args.eval_micro_batch_size * dp)
    chunks = args.virtual_pipeline_model_parallel_size or 1
    return args.eval_iters * microbatches * chunks


def current_iteration() -> int:
    """The iteration being run (1-based), from Megatron's live training state."""
    args = get_args()
    return getattr(args, "curr_iteration", args.iteration - 1) + 1


def write_arguments(args, path: Path) -> None:
    """Megatron's full argument dump (as it prints it at start) into the run directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f"{name} {'.' * (48 - len(name))} {value}" for name, value in sorted(vars(args).items())
    ]
    path.write_text("\n".join(lines) + "\n")


def report_nan(args) -> int:
    """One line naming the iteration and the last good checkpoint; exit code 3."""
    last = last_checkpoint(args.save)
    where = f"{args.save}/iter_{last:07d}" if last else "none saved yet"
    print(
        f"error: NaN/inf in the loss or gradients at iteration {current_iteration()}; "
        f"last good checkpoint: {where}. Lower the learning rate or LAMBDA and rerun "
        "(the same command resumes from it).",
        file=sys.stderr,
        flush=True,
    )
    return 3


def main() -> int:
    args = parse_and_validate_args(extra_args_provider=add_jreg_args)
    guard_wandb_checkpoint_hook()
    jcfg = jreg_config(args)
    refusal = selfdistill_refusal(args, jcfg)
    if refusal:
        print(f"error: {refusal}", file=sys.stderr, flush=True)
        return 2
    # pretrain() binds this rank to cuda:LOCAL_RANK later; name that device now (device.py).
    tracker = JumpTracker.from_config(jcfg, device=rank_device(not ON_CPU))
    runtime = JregRuntime(
        jcfg, tracker, sequence_parallel=args.sequence_parallel,
        tp_size=args.tensor_model_parallel_size, cp_size=args.context_parallel_size,
        per_token_loss=args.calculate_per_token_loss,
    )  # fmt: skip
    run_dir = Path(args.run_dir)
    start_iteration = last_checkpoint(args.load) if args.load else 0
    is_writer = args.rank == args.world_size - 1  # where Megatron puts the TB/W&B writers
    if is_writer:
        run_dir.mkdir(parents=True, exist_ok=True)
        supersede_metrics(run_dir / "metrics.jsonl", start_iteration or 0)
    if args.rank == 0:
        write_arguments(args, run_dir / "arguments.txt")
        if start_iteration:
            say(f"resuming from {args.load}/iter_{start_iteration:07d}")
    if args.rank == 0 and args.save:
        for path in set_aside_incomplete(args.save):
            say(f"set aside an interrupted checkpoint save: {path}")

    eval_samples = args.eval_iters * args.eval_global_batch_size  # validation samples per pass
    model_cfg = gpt_config_from_args(args)
    model_cfg.transformer_layer_spec = jreg_layer_spec(
        runtime, use_te=args.transformer_impl == "transformer_engine", config=model_cfg.transformer
    )
    model_cfg.pre_wrap_hooks.append(layout_invariant_hook(args))
    selfdistill = None
    if jcfg.selfdistill is not None:
        selfdistill = SelfDistillRuntime(
            runtime, tracker, sequence_parallel=args.sequence_parallel,
            per_token_loss=args.calculate_per_token_loss,
            teacher_factory=frozen_teacher_factory(args, model_cfg, jcfg),
        )  # fmt: skip
    logger = RunLogger(
        tracker, finalize_model_grads, log_interval=args.log_interval,
        train_iters=args.train_iters,
        tokens_per_iteration=args.global_batch_size * args.seq_length,
        iteration_fn=current_iteration,
        metrics_path=run_dir / "metrics.jsonl", is_writer=is_writer,
        writers_fn=writers, eval_steps_per_pass=eval_steps_per_pass(args),
        eval_pass_fn=lambda: get_args().consumed_valid_samples // eval_samples + 1,
        print_fn=say,
    )  # fmt: skip
    transformer = model_cfg.transformer
    transformer.experimental_attention_variant_loss_scale_func = runtime.set_loss_scale
    transformer.finalize_model_grads_func = logger.finalize_model_grads
    forward_step = make_forward_step(
        tracker, args.inject_nan_at_iteration, current_iteration, on_eval=logger.on_eval_forward,
        spiky_loss=args.check_for_spiky_loss, selfdistill=selfdistill,
    )  # fmt: skip
    container = pretrain_cfg_container_from_args(args, model_cfg)
    install_sigint()
    try:
        pretrain(
            container, dataset_provider(gpt_dataset_config(args)), ModelType.encoder_or_decoder,
            forward_step,
        )  # fmt: skip
    except SystemExit as exc:
        # a signal or the time limit: Megatron saved a checkpoint and exits 0 (megatron_ext.stop)
        if exc.code in (0, None):
            logger.close(current_iteration(), has_test=False, stopped=True)
            return report_stop(args)
        # Megatron's rerun state machine exits 16/17 after a NaN/inf it reproduced.
        if exc.code not in (
            EXIT_CODE_RESUME_TO_DISAMBIGUATE,
            EXIT_CODE_FAILED_ON_RESULT_VALIDATION,
        ):
            raise
        return report_nan(args)
    except RuntimeError as err:
        if not is_nonfinite_error(err):
            raise
        return report_nan(args)
    logger.close(max(current_iteration(), get_args().iteration), has_test=bool(args.do_test))
    return 0


def memory_hint(args) -> str:
    """What an out-of-memory run held per micro batch, and the settings that hold less."""
    unfused = (
        "; without Transformer Engine attention is unfused and keeps micro batch x heads x seq^2 "
        "scores per layer"
        if args.transformer_impl == "local"
        else ""
    )
    return (
        f"micro batch {args.micro_batch_size} x {args.seq_length} tokens{unfused}; lower it with "
        "ARGS='--micro-batch-size 1' (the global batch stays), or recompute with "
        "ARGS='--recompute-granularity full --recompute-method uniform --recompute-num-layers 1'"
    )


def main_reporting_faults() -> int:
    """``main()``; a fault ``megatron_ext.faults`` knows (disk full, a collective timeout, an
    unloadable checkpoint) ends in its one ``error:`` line and exit code instead of a traceback."""
    try:
        return main()
    except BaseException as exc:  # torch's CheckpointException is a BaseException
        if isinstance(exc, (SystemExit, KeyboardInterrupt)):
            raise
        try:
            args = get_args()
        except Exception:
            raise exc from None
        code = report_failure(
            exc, save_dir=args.save, loading=not hasattr(args, "curr_iteration"),
            timeout_s=args.distributed_timeout_seconds_after_init, memory_hint=memory_hint(args),
        )  # fmt: skip
        if code is None:
            raise
        return code


def end(code: int) -> None:
    """Exit with ``code``. A failed run on a GPU skips the interpreter's teardown: on an H200
    (2026-12-04, docs/benchmarks.md) a run that had printed its out-of-memory traceback was still
    running minutes later, in the teardown of its NCCL process groups (which, destroyed outside
    ``destroy_process_group``, abort their communicators). Nothing is pending then: checkpoints are
    saved synchronously and every line is flushed first."""
    import torch

    sys.stdout.flush()
    sys.stderr.flush()
    if code and torch.cuda.is_initialized():
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    try:
        end(main_reporting_faults())
    except KeyboardInterrupt:  # Ctrl-C during start-up, before there is anything to save
        say("interrupted during start-up; nothing was trained or saved")
        end(128 + 2)
    except SystemExit:
        raise
    except BaseException:  # an unknown fault: its traceback, then the same exit
        traceback.print_exc()
        end(1)
