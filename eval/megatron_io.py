"""Megatron in one process for offline work: the run's model, its checkpoints and its batches.

A world-size-1 gloo group (an in-memory store, so no port) is all Megatron needs. The model is
built with the training builder (``megatron_ext.model``, local layer spec) at TP=1 x PP=1, and
dist-checkpointing reshards any saved TP/PP/VPP layout into it; batches come from Megatron's own
GPTDataset with the run's seed, sequence length and sample counts, so a validation pass here reads
exactly the sequences the training loop read. Import this module only in processes that may be
patched by ``cpu_compat`` (the ``python -m eval`` subcommands), never inside pytest.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator

import torch
from torch.distributed.checkpoint.api import CheckpointException

from megatron_ext import cpu_compat

ON_CPU = cpu_compat.enable()

from megatron.core import parallel_state as ps  # noqa: E402
from megatron.core.datasets.gpt_dataset import GPTDataset  # noqa: E402
from megatron.core.models.gpt import GPTModel  # noqa: E402
from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed  # noqa: E402

from eval.rundir import EvalError, RunDir  # noqa: E402
from eval.sequences import run_dataset  # noqa: E402
from megatron_ext.config import BATCH_KEYS  # noqa: E402
from megatron_ext.model import build_gpt_model, load_weights, transformer_config  # noqa: E402
from megatron_ext.reg import JregRuntime  # noqa: E402
from megatron_ext.regconfig import JregConfig  # noqa: E402


def init(seed: int) -> None:
    """A one-process gloo world and TP=PP=1 model-parallel state (idempotent)."""
    if not torch.distributed.is_initialized():
        store = torch.distributed.HashStore()
        torch.distributed.init_process_group("gloo", store=store, rank=0, world_size=1)
    if not ps.model_parallel_is_initialized():
        ps.initialize_model_parallel(1, 1)
    model_parallel_cuda_manual_seed(seed)
    torch.manual_seed(seed)


def build_model(run: RunDir, dtype: torch.dtype) -> GPTModel:
    """The run's architecture on one process (local spec, no regulariser attached)."""
    cfg = run.model
    runtime = JregRuntime(JregConfig(reg="none", num_layers=cfg.num_layers))
    config = transformer_config(cfg, params_dtype=dtype)
    return build_gpt_model(cfg, config, runtime, run.vocab_size, use_te=False)


def load_checkpoint(run: RunDir, iteration: int, dtype: torch.dtype | None = None) -> GPTModel:
    """The model of ``iter_<iteration>`` in eval mode on CPU, in ``dtype`` (default: as saved)."""
    saved = torch.bfloat16 if run.bf16 else torch.float32
    model = build_model(run, saved)
    ckpt = run.checkpoint_dir(iteration)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            missing = load_weights(model, ckpt)
    except (Exception, CheckpointException) as err:  # torch's is a BaseException: one line too
        cause = err
        if isinstance(err, CheckpointException) and err.failures:  # {rank: (exception, stack)}
            cause = next(iter(err.failures.values()))[0]
        text = str(cause).strip()
        first = f"{type(cause).__name__}: {text.splitlines()[0]}" if text else type(cause).__name__
        raise EvalError(
            f"cannot load {ckpt} ({first}): a damaged or partly copied checkpoint; another one "
            "loads with ITER="
        ) from err
    if missing:
        raise EvalError(f"{ckpt} lacks weights for {', '.join(missing[:3])}")
    if dtype is not None and dtype != saved:
        # A fresh model whose TransformerConfig has this dtype too (casting the parameters alone
        # leaves bf16 in the config and mixed dtypes in attention); load_state_dict casts.
        target = build_model(run, dtype)
        target.load_state_dict(model.state_dict())
        model = target
    return model.eval()


def dataset(run: RunDir, split: str, num_samples: int) -> GPTDataset:
    """The run's GPTDataset for ``split`` (``eval.sequences.run_dataset``)."""
    return run_dataset(run, split, num_samples)


def batches(
    ds: GPTDataset, indices: range, micro_batch_size: int, dev: torch.device
) -> Iterator[dict[str, torch.Tensor]]:
    """Microbatches of ``ds[indices]`` in order, as ``[b, s]`` tensors on ``dev``."""
    for start in range(indices.start, indices.stop, micro_batch_size):
        samples = [ds[i] for i in range(start, min(start + micro_batch_size, indices.stop))]
        yield {k: torch.stack([torch.as_tensor(s[k]) for s in samples]).to(dev) for k in BATCH_KEYS}
