"""What ``make eval`` scores and how lm-eval's HFLM is set up for it, from files only.

A target is one model folder (or hub id) with a column label: a checkpoint's export
(``<out>/hf/iter_<N>/``, label the iteration) or ``MODEL=`` (label ``model-<name>``, a baseline
scored with the same settings). HFLM gets the dtype, batch size and device of ``make eval``; for our
exports also the BOS convention the model was trained with (``export.json``, see
``eval.export_tokenizer``): ``add_bos_token`` as in the data, and ``prefix_token_id`` (what
conditions the first token of a text, lm-eval's default being BOS) the token that precedes a
document in training. Exports written before ``export.json`` recorded it come from data without
BOS (``make data`` has never prepended one), so they get the same. A foreign model keeps lm-eval's
defaults: its own tokenizer's convention.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.files import read_json

DTYPES = ("float32", "bfloat16", "float16")


@dataclass(kw_only=True)
class Target:
    """One model lm-eval scores."""

    label: int | str
    """The checkpoint's iteration, or ``model-<name>`` for ``MODEL=``."""
    pretrained: str
    """What HFLM loads: a folder or a hub id."""
    export: dict
    """The folder's ``export.json`` (``{}`` for a model that is not our export)."""
    delete_after: bool = False
    """``KEEP_EXPORTS=0``: remove the folder once it is scored."""

    @property
    def folder(self) -> str:
        """``results.json`` goes into ``lm_eval/<folder>/``."""
        return f"iter_{self.label:07d}" if isinstance(self.label, int) else str(self.label)


def default_dtype(device: str) -> str:
    """``DTYPE`` when not given: bfloat16 on a GPU (what the run trained in), float32 on CPU."""
    return "bfloat16" if device.startswith("cuda") else "float32"


def lm_args(target: Target, *, device: str, dtype: str, batch_size: int | str) -> dict:
    """Keyword arguments of ``lm_eval.models.huggingface.HFLM`` for ``target``."""
    args = {"pretrained": target.pretrained, "device": device, "batch_size": batch_size,
            "dtype": dtype}  # fmt: skip
    if not target.export:
        return args
    bos = bool(target.export.get("bos_prepended", False))
    prefix = target.export.get("prefix_token_id")
    if prefix is None:  # an export from before the record: the end-of-document id
        config = read_json(Path(target.pretrained) / "config.json")
        prefix = config.get("bos_token_id" if bos else "eos_token_id")
    args.update(add_bos_token=bos, prefix_token_id=prefix)
    return args
