"""Logits of an imported HF folder from the one-process Megatron model (a test helper; its own
process, since cpu_compat patches torch): ``python -m tests.eval.import_logits ROOT NAME...``.

Imports each ``ROOT/NAME/hf`` into ``ROOT/NAME/megatron`` (``make import``'s code), loads the
written checkpoint back into a fresh model and saves its fp32 logits on the ``[b, s]`` tokens of
``ROOT/tokens.pt`` to ``ROOT/NAME/logits.pt``; a refusal is printed as ``NAME: error: ...``.
``python -m tests.eval.import_logits --load OUT TOKENS DUMP``: the logits of an imported folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from eval.import_hf import import_hf, load
from eval.rundir import EvalError


def main(root: str, *names: str) -> None:
    ids = torch.load(Path(root) / "tokens.pt")
    positions = torch.arange(ids.shape[1]).expand_as(ids)
    for name in names:
        case = Path(root) / name
        try:
            import_hf(case / "hf", case / "megatron")
        except EvalError as err:
            print(f"{name}: error: {err}", flush=True)
            continue
        model, _ = load(case / "megatron")
        with torch.no_grad():
            logits = model(ids, positions, None)
        torch.save(logits.float(), case / "logits.pt")


def load_only(out: str, tokens: str, dump: str) -> None:
    ids = torch.load(tokens)
    model, _ = load(Path(out))
    with torch.no_grad():
        logits = model(ids, torch.arange(ids.shape[1]).expand_as(ids), None)
    torch.save(logits.float(), dump)


if __name__ == "__main__":
    if sys.argv[1] == "--load":
        load_only(*sys.argv[2:])
    else:
        main(*sys.argv[1:])
