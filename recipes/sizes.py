"""The one table of model sizes: each entry is a model shape, its training recipe and its GPU
layout on one 8-GPU node. Adding a size is one entry here (its shape and schedule may reuse the
functions of ``recipes.models`` / ``recipes.training`` or be new ones there); the launcher's
SIZE check and help, the memory estimate and the study read the names from this table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from megatron_ext.config import LlamaConfig, ParallelConfig, TrainConfig
from recipes import models, training


@dataclass(frozen=True, kw_only=True)
class Size:
    """What ``SIZE=name`` means."""

    model: Callable[[], LlamaConfig]
    """The architecture (a function, so every call gets a fresh validated config)."""
    train: Callable[[], TrainConfig]
    """The schedule and batch sizes."""
    gpu_layout: ParallelConfig
    """TP/PP/CP and the distributed optimizer on one node of 8 GPUs (80-141 GB each): TP within
    NVLink only where memory needs it. On CPU every size runs TP=PP=CP=1."""


SIZES: dict[str, Size] = {
    "tiny": Size(model=models.tiny, train=training.tiny, gpu_layout=ParallelConfig()),
    "125m": Size(model=models.llama_125m, train=training.small, gpu_layout=ParallelConfig()),
    "350m": Size(model=models.llama_350m, train=training.small, gpu_layout=ParallelConfig()),
    "1b": Size(model=models.llama_1b, train=training.large_mbs(8),
               gpu_layout=ParallelConfig(distributed_optimizer=True)),
    "3b": Size(model=models.llama_3b, train=training.large_mbs(4),
               gpu_layout=ParallelConfig(distributed_optimizer=True)),
    "8b": Size(model=models.llama_8b, train=training.large_mbs(2),
               gpu_layout=ParallelConfig(tp=2, distributed_optimizer=True)),
    "study": Size(model=models.study, train=training.study, gpu_layout=ParallelConfig()),
}  # fmt: skip


def size_recipe(size: str) -> Size:
    """The entry for SIZE; ValueError naming the valid sizes otherwise."""
    if size not in SIZES:
        raise ValueError(f"unknown SIZE {size!r}; valid: {', '.join(SIZES)}")
    return SIZES[size]


def model_recipe(size: str) -> LlamaConfig:
    """The architecture for SIZE."""
    return size_recipe(size).model()


CONTINUED = "continued"
"""TRAIN= for an imported model (``INIT=``'s default): ``recipes.training.continued``."""


def train_recipe(size: str, train: str | None = None) -> TrainConfig:
    """The training schedule for SIZE (``TRAIN=``): the size's own (None or its name), another
    size's (its name), or ``continued`` at SIZE's sequence length with SIZE's micro batch (the
    size table's fit for its GPUs); ValueError naming the valid ones otherwise."""
    own = size_recipe(size)
    if train is None:
        return own.train()
    if train == CONTINUED:
        seq_length = own.model().seq_length
        return training.continued(seq_length).replace(micro_batch_size=own.train().micro_batch_size)
    if train not in SIZES:
        raise ValueError(f"unknown TRAIN {train!r}; valid: {CONTINUED}, {', '.join(SIZES)}")
    return SIZES[train].train()


def parallel_defaults(size: str, num_gpus: int) -> ParallelConfig:
    """Layout for SIZE on ``num_gpus`` GPUs per node (0: CPU, where everything is 1)."""
    if num_gpus == 0:
        return ParallelConfig()
    layout = size_recipe(size).gpu_layout
    if num_gpus % layout.model_parallel_size:
        return ParallelConfig(distributed_optimizer=layout.distributed_optimizer)
    return layout
