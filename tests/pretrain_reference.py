"""Recompute a pretrain run's first logged metrics from scratch (run under torchrun, 1 process).

Builds the run's first global batch from the prepared dataset with Megatron's GPTDataset (same
seed and sample count as the run), the model from the recipe with the layout-invariant init (no
checkpoint: iteration 1 is logged before any update), and computes the LM loss and each layer's
mean displacement from hidden states collected with hooks: an independent check of what the
training loop logged for iteration 1.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from megatron_ext import cpu_compat

cpu_compat.enable()

from megatron.core import parallel_state as ps  # noqa: E402
from megatron.core.datasets.blended_megatron_dataset_builder import (  # noqa: E402
    BlendedMegatronDatasetBuilder,
)
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig  # noqa: E402
from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed  # noqa: E402
from megatron.core.tokenizers import MegatronTokenizer  # noqa: E402
from megatron.core.transformer.transformer_layer import TransformerLayer  # noqa: E402

from megatron_ext.init import layout_invariant_init  # noqa: E402
from megatron_ext.model import build_gpt_model, transformer_config  # noqa: E402
from megatron_ext.reg import JregRuntime  # noqa: E402
from megatron_ext.regconfig import JregConfig  # noqa: E402
from recipes import model_recipe, train_recipe  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--iters", type=int, required=True)
    parser.add_argument("--vocab", type=int, required=True, help="the run's (padded) vocab size")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--save-hidden", help="torch.save h_0..h_L of each microbatch here")
    args = parser.parse_args()
    torch.distributed.init_process_group("gloo")
    ps.initialize_model_parallel(1, 1)
    model_parallel_cuda_manual_seed(args.seed)

    cfg, train = model_recipe(args.size), train_recipe(args.size)
    manifest = json.loads(open(f"{args.data}/manifest.json").read())
    prefix = {k: f"{args.data}/{v['prefix']}" for k, v in manifest["splits"].items()}
    dataset_config = GPTDatasetConfig(
        random_seed=args.seed, sequence_length=cfg.seq_length,
        blend_per_split=[([prefix["train"]], None), ([prefix["valid"]], None), ([prefix["test"]], None)],
        create_attention_mask=False, reset_position_ids=False, reset_attention_mask=False,
        eod_mask_loss=False,
        tokenizer=MegatronTokenizer.from_pretrained(
            tokenizer_path=f"{args.data}/{manifest['tokenizer']['path']}",
            metadata_path={"library": "huggingface"},
        ),
    )  # fmt: skip
    num_samples = [args.iters * train.global_batch_size, None, None]
    train_ds = BlendedMegatronDatasetBuilder(
        GPTDataset, num_samples, lambda: True, dataset_config
    ).build()[0]

    runtime = JregRuntime(JregConfig(reg="none", num_layers=cfg.num_layers))
    model = build_gpt_model(cfg, transformer_config(cfg), runtime, args.vocab)
    layout_invariant_init(
        [model], seed=args.seed, std=cfg.init_method_std, num_layers=cfg.num_layers,
        tp_rank=0, tp_size=1,
    )  # fmt: skip
    captured = {}
    for layer in (m for m in model.modules() if isinstance(m, TransformerLayer)):
        layer.register_forward_hook(
            lambda mod, a, kw, out: captured.__setitem__(mod.layer_number, (kw["hidden_states"], out[0])),
            with_kwargs=True,
        )  # fmt: skip
    losses, d_sum = [], torch.zeros(cfg.num_layers, dtype=torch.float64)
    hidden = []  # per microbatch: [h_0, ..., h_L], float64 [s, b, h]
    num_mb = train.global_batch_size // train.micro_batch_size
    with torch.no_grad():
        for mb in range(num_mb):
            samples = [
                train_ds[i]
                for i in range(mb * train.micro_batch_size, (mb + 1) * train.micro_batch_size)
            ]
            batch = {
                k: torch.stack([torch.as_tensor(s[k]) for s in samples])
                for k in ("tokens", "labels", "position_ids")
            }
            loss_bs = model(batch["tokens"], batch["position_ids"], None, labels=batch["labels"])
            losses.append(loss_bs.double().mean())
            for layer_number, (h_in, h_out) in captured.items():
                psi = 1 - (1 + F.cosine_similarity(h_in.double(), h_out.double(), dim=-1)) / 2
                d_sum[layer_number - 1] += psi.mean()
            states = [captured[1][0]] + [captured[i][1] for i in range(1, cfg.num_layers + 1)]
            hidden.append([h.double() for h in states])
    if args.save_hidden:
        torch.save(hidden, args.save_hidden)
    print(
        json.dumps({"lm_loss": float(torch.stack(losses).mean()), "D": (d_sum / num_mb).tolist()})
    )
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
