"""REG=selfdistill through Megatron's schedule, DDP and finalize_model_grads, and its explicit
reference (``python -m tests.megatron_ext.selfdistill_train_cases --out DIR`` under torchrun with
2 processes over gloo).

Every rank writes, per layout (DP=2, TP=2, TP=2 + SP, TP=2 + SP with selective recompute and
per-token loss), the LM loss, every parameter gradient as pieces of the full tensor and the
tracker's report (``tests.megatron_ext.scenarios.run_layout``), and the reference: the same
weights on one process without DDP or the schedule, h_0..h_L collected by forward hooks, and
autograd of mean_microbatches(CE + lambda * (zeta_1 + alpha * zeta_2)) with the loss of
``megatron_ext.selfdistill`` (itself checked against a float64 reference,
tests/megatron_ext/test_selfdistill.py).
"""

from __future__ import annotations

import argparse
import os

import torch

from megatron_ext import cpu_compat

cpu_compat.enable()

from megatron.core import parallel_state as ps  # noqa: E402
from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed  # noqa: E402
from megatron.core.transformer.transformer_layer import TransformerLayer  # noqa: E402

from megatron_ext.init import global_names  # noqa: E402
from megatron_ext.regconfig import JregConfig  # noqa: E402
from megatron_ext.selfdistill import selfdistill_loss  # noqa: E402
from tests.megatron_ext.reference import model_with  # noqa: E402
from tests.megatron_ext.scenarios import (  # noqa: E402
    MODEL,
    NUM_MICROBATCHES,
    SEED,
    make_batches,
    run_layout,
)

LAM = 20.0  # the term's gradient is then as large as the LM loss's (KL ~1e-3 at init)
SD = {"k": 0.25, "alpha": 0.7, "chunk_tokens": 24}  # chunks cross sequence boundaries
LAYOUTS = [
    {"name": "dp2"},
    {"name": "tp2", "tp": 2},
    {"name": "tp2_sp", "tp": 2, "sp": True},
    {"name": "tp2_sp_selective_per_token", "tp": 2, "sp": True, "per_token": True,
     "overrides": {"recompute_granularity": "selective"}},
]  # fmt: skip
DIRECTIONS = {"paper": LAYOUTS, "forward": LAYOUTS[2:3]}
"""Per SD_DIRECTION, the layouts run (files ``OUT/<direction>/rank<r>.pt``)."""


def config(direction: str) -> JregConfig:
    return JregConfig(reg="selfdistill", lam=LAM, num_layers=MODEL.num_layers,
                      selfdistill={**SD, "direction": direction})  # fmt: skip


def reference(jcfg: JregConfig, lam: float = LAM) -> dict:
    """Explicit step on TP=1 groups: loss, gradients by global name, mean metrics."""
    ps.destroy_model_parallel()
    ps.initialize_model_parallel(1, 1)
    model_parallel_cuda_manual_seed(SEED)
    model, _, _ = model_with(JregConfig(reg="none", num_layers=MODEL.num_layers))
    hiddens: list[torch.Tensor] = []

    def hook(module, args, kwargs, output):
        if module.layer_number == 1:
            hiddens.append(kwargs["hidden_states"])
        hiddens.append(output[0])

    layers = [m for m in model.modules() if isinstance(m, TransformerLayer)]
    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in layers]
    metrics = {"zeta_1": 0.0, "zeta_2": 0.0, "KL": torch.zeros(MODEL.num_layers + 1)}
    lm = 0.0
    for batch in make_batches(NUM_MICROBATCHES):
        hiddens.clear()
        ce = model(batch["tokens"], batch["position_ids"], None, labels=batch["labels"])
        sd, m = selfdistill_loss(
            hiddens, model.decoder.final_layernorm, model.output_layer.weight, jcfg.selfdistill
        )
        ((ce.float().mean() + lam * sd) / NUM_MICROBATCHES).backward()
        lm += float(ce.float().mean()) / NUM_MICROBATCHES
        metrics["zeta_1"] += float(m["zeta_1"]) / NUM_MICROBATCHES
        metrics["zeta_2"] += float(m["zeta_2"]) / NUM_MICROBATCHES
        metrics["KL"] += m["kl"].float() / NUM_MICROBATCHES
    for h in handles:
        h.remove()
    names = global_names(model)
    grads = {names[n]: p.grad.detach().clone() for n, p in model.named_parameters()}
    return {"loss": lm, "grads": grads, "metrics": {**metrics, "KL": metrics["KL"].tolist()}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.distributed.init_process_group("gloo")
    torch.manual_seed(SEED)
    rank = torch.distributed.get_rank()
    for direction, layouts in DIRECTIONS.items():
        jcfg = config(direction)
        results = {layout["name"]: run_layout(layout, jcfg) for layout in layouts}
        results["reference"] = reference(jcfg)
        results["reference"]["ce_grads"] = reference(jcfg, lam=0.0)["grads"]
        os.makedirs(os.path.join(args.out, direction), exist_ok=True)
        torch.save(results, os.path.join(args.out, direction, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
