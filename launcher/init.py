"""``INIT=``: start a run from an imported model (``make import``) instead of random weights.

The run's architecture is the imported one (``import.json``; the training sequence length stays
the recipe's: RoPE does not depend on it), its vocabulary the imported padded one, and Megatron is
given ``--pretrained-checkpoint``: while the run has no checkpoint of its own Megatron loads the
imported weights as a finetune (iteration 0, fresh optimizer and RNG,
``megatron/training/checkpointing.py`` ``load_checkpoint``); once it has one it resumes from it.
The dataset must be tokenized with the model's tokenizer (same vocabulary and special tokens,
compared on ``tokenizer.json``): ``make data TOKENIZER=<model folder>`` prepares one.
"""

from __future__ import annotations

import json
from pathlib import Path

from common.files import run_dir as resolve_run_dir
from launcher.settings import LaunchError
from megatron_ext.config import LlamaConfig

IMPORT_FILE = "import.json"  # eval.import_hf.IMPORT_FILE (not imported: it pulls in torch)


def load_init(spec: str) -> tuple[Path, dict]:
    """The imported folder of ``INIT=`` and its ``import.json``; LaunchError otherwise."""
    folder = resolve_run_dir(spec)
    if (folder / IMPORT_FILE).is_file():
        return folder, json.loads((folder / IMPORT_FILE).read_text())
    if (folder / "config.json").is_file():
        raise LaunchError(f"INIT={spec} is a Hugging Face folder: import it first "
                          f"(make import MODEL={spec} RUN=<name>), then INIT=<name>")  # fmt: skip
    raise LaunchError(f"INIT={spec}: no {IMPORT_FILE} in {folder} (make import writes one)")


def init_model(record: dict, seq_length: int) -> LlamaConfig:
    """The imported architecture, trained at the recipe's ``seq_length``."""
    return LlamaConfig(**record["model"]).replace(seq_length=seq_length)


def _tokenizer(folder: Path) -> tuple[dict, list]:
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise LaunchError(f"cannot read the tokenizer of {folder}: no tokenizer.json")
    tok = json.loads(path.read_text())
    added = sorted((t["id"], t["content"], t.get("special", False)) for t in tok["added_tokens"])
    return tok["model"].get("vocab"), added


def check_tokenizer(record: dict, data_tokenizer: Path, data_vocab: int) -> None:
    """LaunchError unless the dataset's tokenizer is the imported model's."""
    model_dir = Path(record["source"])
    if data_vocab > record["hf_vocab_size"]:
        raise LaunchError(f"the dataset's tokenizer has {data_vocab} tokens, the imported model "
                          f"{record['hf_vocab_size']}: prepare the data with "
                          f"make data TOKENIZER={model_dir}")  # fmt: skip
    ours, theirs = _tokenizer(data_tokenizer), _tokenizer(model_dir)
    for what, a, b in (("vocabulary", ours[0], theirs[0]), ("special tokens", ours[1], theirs[1])):
        if a != b:
            raise LaunchError(f"the dataset's tokenizer ({data_tokenizer}) differs from the "
                              f"imported model's ({model_dir}) in its {what}: prepare the data "
                              f"with make data TOKENIZER={model_dir}")  # fmt: skip
