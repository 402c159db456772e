"""The analysis statistics of one sample set, whatever model produced the residual stream.

A source adapter (``eval.probe`` for our Megatron checkpoints, ``eval.hf_model`` for any Hugging
Face causal LM) runs a batch, captures h_0..h_L (h_0 = the input of layer 1, h_l = layer l's
output, both before the final norm) and hands them to ``Stats.add`` with a ``head`` (final norm +
unembedding, ``h -> logits``), so both sources are measured by this one code path: per-layer
displacements and relative L2 (the training code's ``megatron_ext.jreg`` functions), hidden
norms, the logit lens, decision depth (``eval.depth``), voids and massive activations
(``eval.activations``, streamed: nothing is kept across batches but sums).

Averaging is the training tracker's: D_l and friends are the token mean of each batch, then the
mean over batches; losses are sums over unmasked tokens divided by their count. Voids and massive
activations count every position (loss mask ignored). Shapes: ``_bsh`` = [batch, sequence,
hidden]; ``_n*`` = tokens flattened in [batch, sequence] order.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from eval.activations import VOID_ALPHA, MassiveStats, active_layers, token_norms, void_summary
from eval.depth import DepthStats
from megatron_ext import regularizers
from megatron_ext.jreg import displacement, relative_l2
from megatron_ext.metrics import summarise

# Logit-lens chunk: about this many logits at once (fp32), whatever the vocabulary.
_LENS_LOGITS = 1 << 24
_LENS = ("loss", "acc", "kl_to_final", "agree_with_final")


class Stats:
    """Accumulates one sample set's measurements over batches.

    Args:
        num_layers: L.
        layer_weights: w_1..w_L of the run's regulariser (for ``jreg_loss``).
        reg: the run's ``REG`` (``megatron_ext.regularizers``): ``jreg_loss`` weighs its
            per-layer means (Psi for ``jreg`` and ``none``), as the training tracker does.
        alpha: the void threshold's alpha.
        massive: also measure massive activations.
        buckets: ``[vocab]`` frequency bucket per token id (``eval.depth.bucket_table``); decision
            depth is measured when given.
    """

    def __init__(
        self,
        num_layers: int,
        layer_weights: torch.Tensor,
        reg: str = "jreg",
        alpha: float = VOID_ALPHA,
        massive: bool = False,
        buckets: torch.Tensor | None = None,
    ):
        self.num_layers = num_layers
        self.alpha = alpha
        self.massive = MassiveStats(num_layers + 1) if massive else None
        self.depth = DepthStats(num_layers, buckets) if buckets is not None else None
        self.num_active = torch.zeros(num_layers, dtype=torch.float64)
        self.weights = layer_weights.double().cpu()
        self.reg = reg
        self.regularizer = regularizers.get(reg)
        self.reg_is_psi = reg in regularizers.NO_R
        self.reg_sum = torch.zeros(num_layers, dtype=torch.float64)
        layers = num_layers + 1
        self.psi = torch.zeros(num_layers, dtype=torch.float64)
        self.rel = torch.zeros(num_layers, dtype=torch.float64)
        self.norm = torch.zeros(layers, dtype=torch.float64)
        self.lens = {k: torch.zeros(layers, dtype=torch.float64) for k in _LENS}
        self.num_batches = 0
        self.loss_sum = 0.0
        self.num_loss_tokens = 0.0
        self.num_tokens = 0
        self.num_sequences = 0

    @torch.no_grad()
    def add(
        self,
        hidden_bsh: list[torch.Tensor],
        head: Callable[[torch.Tensor], torch.Tensor],
        labels_bs: torch.Tensor,
        mask_bs: torch.Tensor,
        loss_bs: torch.Tensor | None = None,
    ) -> None:
        """One batch: h_0..h_L, ``head`` (``[n, h] -> [n, vocab]`` logits), labels, loss mask
        and, where the model computes it, its own per-token loss (else the lens's at h_L)."""
        if len(hidden_bsh) != self.num_layers + 1:
            raise ValueError(f"expected {self.num_layers + 1} states, got {len(hidden_bsh)}")
        mask_bs = mask_bs.float()
        self.num_tokens += labels_bs.numel()
        self.num_sequences += labels_bs.shape[0]
        self.num_batches += 1
        for i in range(self.num_layers):
            a, b = hidden_bsh[i], hidden_bsh[i + 1]
            self.psi[i] += float(displacement(a, b).mean())
            self.rel[i] += float(relative_l2(a, b).mean())
            if not self.reg_is_psi:
                self.reg_sum[i] += float(self.regularizer(a, b).mean())
        for i, h in enumerate(hidden_bsh):
            self.norm[i] += float(h.float().norm(dim=-1).mean())
        if self.massive is not None:
            self.massive.add(hidden_bsh)
        self.num_active += active_layers(token_norms(hidden_bsh), self.alpha).double().sum(0).cpu()
        mask_n = mask_bs.reshape(-1)
        final_nll = self._lens(head, hidden_bsh, labels_bs.reshape(-1), mask_n)
        if loss_bs is not None:
            self.loss_sum += float((loss_bs.float() * mask_bs).sum().double())
        else:
            self.loss_sum += final_nll
        self.num_loss_tokens += float(mask_bs.sum())

    def _lens(self, head, hidden_bsh, labels_n, mask_n) -> float:
        """Adds the lens of every state; returns the masked NLL sum at h_L."""

        def logprobs(h_nh):
            return F.log_softmax(head(h_nh).float(), dim=-1)

        flat_nh = [h.reshape(-1, h.shape[-1]) for h in hidden_bsh]
        vocab = head(flat_nh[-1][:1]).shape[-1]
        chunk = max(1, _LENS_LOGITS // vocab)
        final_nll = 0.0
        for start in range(0, labels_n.numel(), chunk):
            sl = slice(start, start + chunk)
            final = logprobs(flat_nh[-1][sl])
            mask, labels = mask_n[sl].double(), labels_n[sl]
            final_top = final.argmax(-1)
            tops = []
            for i, h_nh in enumerate(flat_nh):
                lp = final if i == self.num_layers else logprobs(h_nh[sl])
                nll = -lp.gather(-1, labels[:, None]).squeeze(-1).double()
                kl = (final.exp() * (final - lp)).sum(-1).double()
                top = lp.argmax(-1)
                tops.append(top)
                self.lens["loss"][i] += float((nll * mask).sum())
                self.lens["acc"][i] += float(((top == labels).double() * mask).sum())
                self.lens["kl_to_final"][i] += float((kl * mask).sum())
                self.lens["agree_with_final"][i] += float(
                    ((top == final_top).double() * mask).sum()
                )
                if i == self.num_layers:
                    final_nll += float((nll * mask).sum())
            if self.depth is not None:
                self.depth.add(torch.stack(tops, dim=1), mask)
        return final_nll

    def summary(self) -> dict:
        """The sample set's metrics (JSON-ready)."""
        if not self.num_batches:
            raise RuntimeError("no batch was added")
        d = (self.psi / self.num_batches).tolist()
        rel = (self.rel / self.num_batches).tolist()
        reg = None if self.reg_is_psi else (self.reg_sum / self.num_batches).tolist()
        jump = summarise(d, reg, self.weights)  # the training tracker's summariser
        denom = max(self.num_loss_tokens, 1.0)
        lens = {k: (v / denom).tolist() for k, v in self.lens.items()}
        lens["ppl"] = [math.exp(x) if x < 700 else math.inf for x in lens["loss"]]
        out = {
            "num_sequences": self.num_sequences,
            "num_tokens": self.num_tokens,
            "lm_loss": self.loss_sum / denom,
            "D": d,
            "zeta_L": jump["zeta_L"],
            "jump_ratio": jump["jump_ratio"],
            "S_model": jump["S_model"],
            "jreg_loss": jump["jreg_loss"],
            **({"R": reg} if reg is not None else {}),
            "rel_l2": rel,
            "hidden_norm": (self.norm / self.num_batches).tolist(),
            "lens": lens,
            "voids": void_summary(self.num_active, self.num_tokens, self.alpha),
        }
        if self.depth is not None:
            out["decision_depth"] = self.depth.summary()
        if self.massive is not None:
            out["massive"] = self.massive.summary()
        return out
