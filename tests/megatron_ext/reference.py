"""Single-process checks of the JREG mechanism against explicit references (run under torchrun).

- ``explicit``: gradients of the attached per-layer terms (through Megatron's schedule) equal the
  gradients of CE + lambda * sum_l w_l mean(R_l) computed from hidden states collected by hooks,
  with R computed independently of megatron_ext.jreg (torch's cosine similarity, float64).
- ``plain``: REG=none is bit-identical to a plain Megatron GPTModel (local spec).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from megatron_ext import cpu_compat

cpu_compat.enable()

from megatron.core.models.gpt import GPTModel  # noqa: E402
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec  # noqa: E402
from megatron.core.pipeline_parallel import get_forward_backward_func  # noqa: E402
from megatron.core.transformer.transformer_layer import TransformerLayer  # noqa: E402

from megatron_ext.init import layout_invariant_init  # noqa: E402
from megatron_ext.model import build_gpt_model, transformer_config  # noqa: E402
from megatron_ext.reg import JregRuntime  # noqa: E402
from megatron_ext.regconfig import JregConfig  # noqa: E402
from megatron_ext.tracker import JumpTracker  # noqa: E402
from tests.megatron_ext.scenarios import (  # noqa: E402
    MODEL,
    NUM_MICROBATCHES,
    SEED,
    VOCAB,
    forward_step,
    make_batches,
    one_process,
)

LAM = 1.0


def model_with(jcfg: JregConfig, use_te: bool | None = None, **overrides):
    """(model, config, tracker): one TP=PP=1 chunk of ``MODEL`` (TransformerConfig ``overrides``)
    with ``jcfg``'s regulariser, initialised layout-invariantly from ``SEED``."""
    tracker = JumpTracker.from_config(jcfg)
    runtime = JregRuntime(jcfg, tracker)
    config = transformer_config(MODEL, **overrides)
    model = build_gpt_model(MODEL, config, runtime, VOCAB, use_te=use_te)
    layout_invariant_init(
        [model], seed=SEED, std=MODEL.init_method_std, num_layers=MODEL.num_layers,
        tp_rank=0, tp_size=1,
    )  # fmt: skip
    return model, config, tracker


def schedule_step(model, config) -> tuple[float, dict[str, torch.Tensor]]:
    """One step through Megatron's no-pipelining schedule; returns (lm loss, grads)."""
    model.zero_grad(set_to_none=True)
    config.grad_scale_func = None
    losses = get_forward_backward_func()(
        forward_step_func=forward_step, data_iterator=iter(make_batches(NUM_MICROBATCHES)),
        model=model, num_microbatches=NUM_MICROBATCHES, seq_length=MODEL.seq_length,
        micro_batch_size=2, forward_only=False,
    )  # fmt: skip
    total = torch.stack([x["lm loss"] for x in losses]).sum(0)
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    return float(total[0] / total[1]), grads


def reference_regularizer(reg: str, h_in: torch.Tensor, h_out: torch.Tensor) -> torch.Tensor:
    a, b = h_in.double(), h_out.double()
    if reg == "l2rel":
        return (b - a).norm(dim=-1) / a.norm(dim=-1)
    return 1 - (1 + F.cosine_similarity(a, b, dim=-1)) / 2


def explicit_step(model, reg: str, weights: torch.Tensor, lam: float):
    """CE + lam * sum_l w_l mean(R_l) from hook-collected hidden states; returns grads and D."""
    captured: dict[int, tuple] = {}

    def hook(module, args, kwargs, output):
        captured[module.layer_number] = (kwargs["hidden_states"], output[0])

    layers = [m for m in model.modules() if isinstance(m, TransformerLayer)]
    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in layers]
    model.zero_grad(set_to_none=True)
    d_sum = torch.zeros(MODEL.num_layers, dtype=torch.float64)
    for batch in make_batches(NUM_MICROBATCHES):
        captured.clear()
        loss_bs = model(batch["tokens"], batch["position_ids"], None, labels=batch["labels"])
        loss = loss_bs.float().mean().double()
        for layer_number, (h_in, h_out) in captured.items():
            d_sum[layer_number - 1] += reference_regularizer("jreg", h_in, h_out).mean().detach()
            loss = (
                loss
                + lam * weights[layer_number - 1] * reference_regularizer(reg, h_in, h_out).mean()
            )
        (loss / NUM_MICROBATCHES).backward()
    for h in handles:
        h.remove()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    return grads, (d_sum / NUM_MICROBATCHES).tolist()


def check_explicit(reg: str) -> dict:
    jcfg = JregConfig(reg=reg, lam=LAM, schedule="linear", num_layers=MODEL.num_layers)
    model, config, tracker = model_with(jcfg)
    loss, grads = schedule_step(model, config)
    report = tracker.report("train")
    none_cfg = JregConfig(reg="none", num_layers=MODEL.num_layers)
    plain_model, _, _ = model_with(none_cfg)
    ref_grads, ref_d = explicit_step(plain_model, reg, jcfg.weights, LAM)
    ce_grads, _ = explicit_step(plain_model, reg, jcfg.weights, 0.0)
    return {"loss": loss, "grads": grads, "ref_grads": ref_grads, "ce_grads": ce_grads,
            "report": report, "ref_d": ref_d, "weights": jcfg.weights.tolist()}  # fmt: skip


def check_plain() -> dict:
    """REG=none (tracker on) vs a plain GPTModel with the same weights: bitwise."""
    model, config, tracker = model_with(JregConfig(reg="none", num_layers=MODEL.num_layers))
    loss, grads = schedule_step(model, config)
    plain_config = transformer_config(MODEL)
    plain = GPTModel(
        config=plain_config, transformer_layer_spec=get_gpt_layer_local_spec(normalization="RMSNorm"),
        vocab_size=VOCAB, max_sequence_length=MODEL.seq_length,
        share_embeddings_and_output_weights=False, position_embedding_type="rope",
        rotary_base=MODEL.rotary_base,
    )  # fmt: skip
    plain.load_state_dict(model.state_dict())
    plain_loss, plain_grads = schedule_step(plain, plain_config)
    return {"loss": loss, "grads": grads, "plain_loss": plain_loss, "plain_grads": plain_grads,
            "report": tracker.report("train")}  # fmt: skip


def main() -> None:
    with one_process(SEED) as out:
        torch.manual_seed(SEED)
        results = {"jreg": check_explicit("jreg"), "l2rel": check_explicit("l2rel"),
                   "plain": check_plain()}  # fmt: skip
        torch.save(results, os.path.join(out, "reference.pt"))


if __name__ == "__main__":
    main()
