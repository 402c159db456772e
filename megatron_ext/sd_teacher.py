"""``SD_TEACHER=frozen``: the model as it was when distillation started, forward only.

The paper distills every layer toward "the output distribution of the model as it was when
distillation started". For a continued run that model is INIT='s checkpoint
(``--pretrained-checkpoint``, which the run starts from), so the teacher is read from it again
at every start: the first one and every resume after a walltime stop alike give the same teacher,
and nothing is saved twice. A run from random weights has no such model; ``sd_settings.refusal``
says so before the start.

The teacher is a second GPT model of the run's configuration, built as Megatron builds the
student (``GPTModelConfig``'s builder, same TP/SP groups and dtype) but with Megatron's plain
layer spec (its hidden states never reach the student's JREG hooks or collector), its weights read
with ``dist_checkpointing`` from that checkpoint (resharded to this layout as the student's were),
frozen and in eval mode. Building it (at the first microbatch of every start) leaves the RNG
states as they were, so a start with the teacher draws the random numbers a start without it would.

Per microbatch it returns zeta_1's target as ``megatron_ext.selfdistill.zeta1`` takes it: the
teacher's final-norm output (``[s, b, h]``, ``s / tp`` tokens under SP), an identity norm and its
output-layer weight shard; the loss projects it chunk by chunk like the student's lens, so the
teacher's ``[s, b, vocab]`` logits are never held.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from megatron.core.tensor_parallel import get_cuda_rng_tracker

from megatron_ext.layer import base_layer_spec
from megatron_ext.model import load_weights
from megatron_ext.resume import last_checkpoint


def _as_is(x: torch.Tensor) -> torch.Tensor:
    """The teacher's hidden state is already through its final norm."""
    return x


def checkpoint_dir(folder: str | Path) -> Path:
    """The latest checkpoint folder (``iter_NNNNNNN``) of ``folder`` (``make import`` writes
    iteration 0), read as every resume reads it (``megatron_ext.resume.last_checkpoint``)."""
    iteration = last_checkpoint(folder)
    if iteration is None:
        raise RuntimeError(f"SD_TEACHER=frozen: no checkpoint in {folder} (a make import folder?)")
    return Path(folder) / f"iter_{iteration:07d}"


class FrozenTeacher:
    """The frozen copy of the model at ``folder``'s checkpoint, on the student's layout.

    Args:
        model_cfg: the run's ``GPTModelConfig`` (the student's; copied, not changed).
        folder: INIT='s checkpoint folder (``--pretrained-checkpoint``).
        student: the student's ``GPTModel`` (its process groups are the teacher's).
        use_te: the run's layer implementation (Transformer Engine or local).
    """

    def __init__(self, model_cfg, folder: str | Path, student, *, use_te: bool):
        cfg = dataclasses.replace(
            model_cfg, transformer_layer_spec=base_layer_spec(model_cfg.transformer, use_te),
            pre_wrap_hooks=[], post_wrap_hooks=[],
        )  # fmt: skip
        rng = get_cuda_rng_tracker().get_states()
        devices = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=devices):
            chunks = cfg.get_builder_cls()(cfg).build_distributed_models(
                pg_collection=student.pg_collection, wrap_with_ddp=False
            )
        get_cuda_rng_tracker().set_states(rng)
        (chunk,) = chunks
        while hasattr(chunk, "module"):  # Float16Module: the parameters are already bf16
            chunk = chunk.module
        self.gpt = chunk
        self.checkpoint = checkpoint_dir(folder)
        missing = load_weights(self.gpt, self.checkpoint)
        if missing:
            raise RuntimeError(
                f"SD_TEACHER=frozen: {self.checkpoint} lacks {', '.join(missing[:3])}"
            )
        self.gpt.requires_grad_(False)
        self.gpt.eval()
        if self.gpt.share_embeddings_and_output_weights:
            self.weight = self.gpt.shared_embedding_or_output_weight()
        else:
            self.weight = self.gpt.output_layer.weight

    @torch.no_grad()
    def target(self, batch: dict[str, torch.Tensor]) -> tuple:
        """(final-norm output ``[s, b, h]``, identity norm, output weight) for ``batch``."""
        # GPTModel._postprocess returns the decoder's output (after the block's final norm)
        # before the output layer when post_process is False (gpt_model.py:683, megatron-core
        # 0.19.2): the teacher's vocabulary projection then runs chunked inside the loss.
        self.gpt.post_process = False
        try:
            hidden_sbh = self.gpt(batch["tokens"], batch["position_ids"], None)
        finally:
            self.gpt.post_process = True
        return hidden_sbh, _as_is, self.weight
