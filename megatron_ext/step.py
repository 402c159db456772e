"""What ``megatron.training.pretrain()`` calls per microbatch: batches, forward, loss.

Mirrors Megatron-LM's ``pretrain_gpt.py`` for a GPTDataset: every rank reads its batches itself
(the provider is marked ``is_distributed``, so no TP broadcast is needed and every pipeline stage
keeps its own iterator), CP ranks keep their zigzag slice of the sequence, and the loss function
returns Megatron's ``(sum, num_tokens, {"lm loss": [sum, count]})`` so the schedule and the
training log reduce it the usual way. The LM loss also goes into the jump tracker, which the run
logger reduces together with D_l once per logging step.
"""

from __future__ import annotations

from functools import partial

import torch
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
from megatron.core.rerun_state_machine import get_rerun_state_machine
from megatron.core.utils import get_batch_on_this_cp_rank, get_model_config

from megatron_ext.config import BATCH_KEYS
from megatron_ext.tracker import JumpTracker


def dataset_provider(dataset_config: GPTDatasetConfig):
    """The ``train_valid_test_datasets_provider`` for prepared .bin/.idx splits."""

    def provider(train_val_test_num_samples, vp_stage=None):
        return BlendedMegatronDatasetBuilder(
            GPTDataset, train_val_test_num_samples, lambda: True, dataset_config
        ).build()

    provider.is_distributed = True  # every rank builds its own loaders (no TP broadcast)
    return provider


def _unwrap(model):
    while hasattr(model, "module"):
        model = model.module
    return model


def get_batch(data_iterator, model) -> dict[str, torch.Tensor]:
    """Next microbatch on this rank's device, sliced for context parallelism."""
    batch = next(data_iterator)
    device = torch.cuda.current_device() if torch.cuda.is_available() else "cpu"
    batch = {k: batch[k].to(device, non_blocking=True) for k in BATCH_KEYS}
    if get_model_config(model).context_parallel_size > 1:
        batch = get_batch_on_this_cp_rank(
            batch, is_hybrid_cp=False, cp_group=_unwrap(model).pg_collection.cp
        )
    return batch


def loss_func(
    loss_mask: torch.Tensor,
    tracker: JumpTracker | None,
    training: bool,
    output_tensor: torch.Tensor,
    nan_now: bool = False,
):
    """Token-summed LM loss in Megatron's 3-tuple convention (the schedule normalises it)."""
    losses_bs = output_tensor.float()
    mask = loss_mask.view(-1).float()
    loss_sum = torch.sum(losses_bs.view(-1) * mask)
    if nan_now:
        loss_sum = loss_sum * float("nan")
    num_tokens = mask.sum().to(torch.int)
    if tracker is not None:
        tracker.record_lm_loss(loss_sum, num_tokens, training)
    report = torch.cat([loss_sum.detach().view(1), num_tokens.float().view(1)])
    return loss_sum, num_tokens, {"lm loss": report}


SPIKY_LOSS_FACTOR = 10  # Megatron-LM pretrain_gpt.py's threshold


def check_spiky_loss(loss_sum: torch.Tensor) -> None:
    """``--check-for-spiky-loss`` as Megatron-LM's pretrain_gpt.py does it: a microbatch loss
    over 10x the largest of the first 100 seen is flagged to the rerun state machine, which
    re-runs that iteration once, logs whether the spike reproduced, and continues (non-fatal)."""
    machine = get_rerun_state_machine()
    machine.validate_result(
        result=loss_sum,
        rejection_func=partial(
            machine.is_unexpectedly_large, threshold=SPIKY_LOSS_FACTOR, context="loss"
        ),
        message="Spiky loss",
        tolerance=0.0,  # the forward pass is deterministic
        fatal=False,
    )


def _spike_checked(loss_fn, output_tensor):
    out = loss_fn(output_tensor)
    check_spiky_loss(out[0])
    return out


def make_forward_step(
    tracker: JumpTracker | None,
    nan_at_iteration=None,
    iteration_fn=None,
    on_eval=None,
    spiky_loss: bool = False,
    selfdistill=None,
):
    """``forward_step(data_iterator, model)`` for pretrain().

    ``on_eval`` is called once per evaluation forward step (the run logger counts passes).
    ``nan_at_iteration``/``iteration_fn`` inject a NaN loss at one iteration (fault-injection for
    the tests of the NaN stop; never set in normal runs). ``spiky_loss``: check_spiky_loss.
    ``selfdistill``: REG=selfdistill's runtime (``megatron_ext.selfdistill_train``), whose loss is
    attached to the model's output here, where the output layer has run.
    """

    def forward_step(data_iterator, model, return_schedule_plan: bool = False):
        training = model.training
        if not training and on_eval is not None:
            on_eval()  # before the forward: it may close the previous pass's records
        batch = get_batch(data_iterator, model)
        output_bs = model(batch["tokens"], batch["position_ids"], None, labels=batch["labels"])
        if selfdistill is not None:
            output_bs = selfdistill.attach(output_bs, model, training, batch)
        nan_now = bool(
            nan_at_iteration is not None and training and iteration_fn() == nan_at_iteration
        )
        loss_fn = partial(loss_func, batch["loss_mask"], tracker, training, nan_now=nan_now)
        return output_bs, partial(_spike_checked, loss_fn) if spiky_loss and training else loss_fn

    return forward_step
