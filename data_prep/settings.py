"""`make data` settings (`KEY=value`) -> `python -m data_prep build|adopt` flags: the one mapping
that the Makefile (`make data ...`) and the data-prep job (jobs/data.sh) both use, through
`python -m data_prep make KEY=value ...`."""

from common.settings import parse_settings
from data_prep.errors import DataError

VARIABLES = {
    "CORPUS": "default | embedded:a+b | fineweb-edu | hf:REPO[:CONFIG[:SPLIT]] | files, globs, "
    "folders (.jsonl[.gz|.zst], .json.gz, .parquet, .txt, save_to_disk folders)",
    "NAME": "output folder name under OUT_ROOT (default: from the corpus)",
    "VOCAB": "vocabulary of the trained tokenizer (default 8192)",
    "TOKENIZER": "existing tokenizer: .model, HF folder, tiktoken file",
    "TEXT_FIELD": "record field(s) with the text; title,text joins them with a blank line",
    "SPLIT": "train,valid,test fractions (default 98,1,1)",
    "OUT_ROOT": "folder the dataset goes under (default data)",
    "FORCE": "1: overwrite an output built differently",
    "WORKERS": "processes (default: all cores)",
    "ADOPT": "<prefix>[,<prefix>...]: existing Megatron .bin/.idx (with TOKENIZER=), no re-tokenizing",
}
_FLAGS = {"NAME": "--name", "VOCAB": "--vocab-size", "TOKENIZER": "--tokenizer",
          "TEXT_FIELD": "--text-field", "SPLIT": "--split", "OUT_ROOT": "--out-root",
          "WORKERS": "--workers"}  # fmt: skip
_ADOPT_ONLY_NOT = ("CORPUS", "VOCAB", "TEXT_FIELD", "WORKERS")


def to_argv(argv: list[str]) -> list[str]:
    """`KEY=value` words -> the `python -m data_prep` command line (`build`, or `adopt`)."""
    v = parse_settings(argv, VARIABLES, DataError, strip=True)
    force = v.pop("FORCE", "0") not in ("0", "")
    if "ADOPT" in v:
        extra = [k for k in _ADOPT_ONLY_NOT if k in v]
        if extra:
            raise DataError(f"ADOPT= takes no {extra[0]}= (the data is already tokenized)")
        out = ["adopt", "--prefix", v.pop("ADOPT")]
    else:
        out = ["build", "--corpus", v.pop("CORPUS", "default")]
    for key, value in v.items():
        out += [_FLAGS[key], value]
    return out + (["--force"] if force else [])
