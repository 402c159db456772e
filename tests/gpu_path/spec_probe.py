"""Build a real local-spec JREG model (CPU, gloo, one process) from a TransformerConfig with
--qk-layernorm, initialise it, and write each parameter's name, owning module class and whether
it is all ones (``python -m tests.gpu_path.spec_probe --out FILE``)."""

from __future__ import annotations

import argparse
import json

import torch

from megatron_ext import cpu_compat

cpu_compat.enable()

from megatron.core import parallel_state as ps  # noqa: E402
from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed  # noqa: E402

from megatron_ext.init import layout_invariant_init, param_owners  # noqa: E402
from megatron_ext.model import build_gpt_model, transformer_config  # noqa: E402
from megatron_ext.reg import JregConfig, JregRuntime  # noqa: E402
from megatron_ext.tracker import JumpTracker  # noqa: E402
from tests.megatron_ext.scenarios import MODEL, SEED, VOCAB  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.distributed.init_process_group("gloo")
    ps.initialize_model_parallel(1, 1)
    model_parallel_cuda_manual_seed(SEED)
    jcfg = JregConfig(num_layers=MODEL.num_layers)
    runtime = JregRuntime(jcfg, JumpTracker.from_config(jcfg))
    config = transformer_config(MODEL, qk_layernorm=True)
    model = build_gpt_model(MODEL, config, runtime, VOCAB, use_te=False)
    layout_invariant_init(
        [model], seed=SEED, std=MODEL.init_method_std, num_layers=MODEL.num_layers,
        tp_rank=0, tp_size=1,
    )  # fmt: skip
    owners = param_owners(model)
    out = {
        name: {"owner": type(owners[name][0]).__name__, "ones": bool((p == 1).all())}
        for name, p in model.named_parameters()
    }
    with open(args.out, "w") as f:
        json.dump(out, f)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
