"""Self-distillation loss cases and their float64 reference (``megatron_ext.selfdistill``).

``python -m tests.megatron_ext.selfdistill_cases OUT`` under torchrun (gloo) runs every case with
the output layer's rows split over the ranks (vocabulary-parallel, as Megatron's TP) and writes,
per rank, the loss, the metrics and the gradients; the tests compare them with ``reference``.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist

from megatron_ext.sd_settings import SelfDistillConfig
from megatron_ext.selfdistill import layer_weights, selfdistill_loss

LAYERS, SEQ, BATCH, HIDDEN, VOCAB = 3, 8, 2, 16, 24
CASES = {
    "paper_self": SelfDistillConfig(chunk_tokens=5),
    "forward_self": SelfDistillConfig(direction="forward", chunk_tokens=4),
    "paper_frozen": SelfDistillConfig(teacher="frozen", chunk_tokens=100, k=0.5, alpha=0.3),
    "forward_frozen": SelfDistillConfig(direction="forward", teacher="frozen", chunk_tokens=3),
}


class RMSNorm(torch.nn.Module):
    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = torch.nn.Parameter(weight)

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * self.weight


def inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    """Hidden states h_0..h_L, norm and head weights, and a teacher's, all float64."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    h = [r(SEQ, BATCH, HIDDEN)]
    for _ in range(LAYERS):
        h.append(h[-1] + 0.7 * r(SEQ, BATCH, HIDDEN))
    return {
        "hiddens": torch.stack(h), "norm": 1 + 0.1 * r(HIDDEN), "head": r(VOCAB, HIDDEN),
        "t_hidden": h[-1] + 0.3 * r(SEQ, BATCH, HIDDEN), "t_norm": 1 + 0.1 * r(HIDDEN),
        "t_head": r(VOCAB, HIDDEN),
    }  # fmt: skip


def reference(cfg: SelfDistillConfig, x: dict) -> dict[str, torch.Tensor]:
    """The loss written out whole in float64: full logits of every layer at once."""
    hs = x["hiddens"].clone().requires_grad_()
    norm_w = x["norm"].clone().requires_grad_()
    head = x["head"].clone().requires_grad_()

    def lens(h, nw, w):
        n = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-5) * nw
        return torch.log_softmax(n @ w.t(), dim=-1)

    if cfg.teacher == "self":
        t = lens(hs[-1], norm_w, head).detach()
    else:
        t = lens(x["t_hidden"], x["t_norm"], x["t_head"])
    logq = lens(hs, norm_w, head)  # [L+1, s, b, V]
    if cfg.direction == "paper":
        kl = (logq.exp() * (logq - t)).sum(-1).mean(dim=(1, 2))
    else:
        kl = (t.exp() * (t - logq)).sum(-1).mean(dim=(1, 2))
    w = layer_weights(LAYERS, cfg.k)
    rel = ((hs[1:] - hs[:-1]).norm(dim=-1) / hs[:-1].norm(dim=-1)).mean(dim=(1, 2))
    z1, z2 = (w * kl).sum(), (w[1:] * rel).sum()
    loss = z1 + cfg.alpha * z2
    loss.backward()
    return {"loss": loss.detach(), "zeta_1": z1.detach(), "zeta_2": z2.detach(),
            "kl": kl.detach(), "rel": rel.detach(), "g_hiddens": hs.grad, "g_norm": norm_w.grad,
            "g_head": head.grad}  # fmt: skip


def run(cfg: SelfDistillConfig, x: dict, rank=0, world=1, group=None, sp=False) -> dict:
    """The implementation with this rank's rows of the head (vocab / world of them) and, with
    ``sp``, this rank's s / world tokens of the hidden states."""
    rows = VOCAB // world
    tokens = slice(rank * SEQ // world, (rank + 1) * SEQ // world) if sp else slice(None)
    x = {**x, "hiddens": x["hiddens"][:, tokens], "t_hidden": x["t_hidden"][tokens]}
    hs = x["hiddens"].clone().requires_grad_()
    norm = RMSNorm(x["norm"].clone())
    head = x["head"][rank * rows : (rank + 1) * rows].clone().requires_grad_()
    target = None
    if cfg.teacher == "frozen":
        t_head = x["t_head"][rank * rows : (rank + 1) * rows]
        target = (x["t_hidden"], RMSNorm(x["t_norm"]).requires_grad_(False), t_head)
    hiddens = list(hs.unbind(0))
    loss, m = selfdistill_loss(hiddens, norm, head, cfg, target=target, group=group, sp=sp)
    loss.backward()
    return {"loss": loss.detach(), **m, "g_hiddens": hs.grad, "g_norm": norm.weight.grad,
            "g_head": head.grad}  # fmt: skip


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    x = inputs()
    group = dist.group.WORLD
    results = {
        (name, sp): run(cfg, x, rank, world, group, sp)
        for name, cfg in CASES.items()
        for sp in (False, True)
    }
    torch.save(results, os.path.join(args.out, f"rank{rank}.pt"))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
