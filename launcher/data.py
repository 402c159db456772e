"""The run's data: ``DATA=`` (a folder or a weighted blend, ``common.datablend``) checked before
anything starts. Each member is validated (``python -m data_prep validate``), every split must hold
a document (Megatron cannot memory-map an empty ``.bin``) and a blend's members must give the
same token ids (one tokenizer). Data flags in ``ARGS`` are refused: the launcher derives them from ``DATA``, the run's
records and its resume check. Each failure is a ``LaunchError`` (one line, exit 2)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from common.datablend import parse_data
from common.files import REPO
from common.settings import DEFAULT_DATA
from launcher.settings import LaunchError

SPLITS = ("train", "valid", "test")
# Megatron's data flags (megatron/training/arguments.py, _add_data_args) that would bypass DATA=.
DATA_FLAGS = ("--data-path", "--train-data-path", "--valid-data-path", "--test-data-path",
              "--data-args-path", "--per-split-data-args-path", "--split", "--mock-data")  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Dataset:
    """One member of the run's data (the only one for a single folder)."""

    weight: float
    """Normalised blend weight (1.0 alone)."""
    path: Path
    """The prepared dataset folder."""
    manifest: dict
    """Its ``manifest.json``."""

    def prefixes(self) -> dict[str, str]:
        """``train``/``valid``/``test`` -> indexed-dataset prefix."""
        return {s: str(self.path / self.manifest["splits"][s]["prefix"]) for s in SPLITS}

    @property
    def tokenizer_dir(self) -> Path:
        return self.path / self.manifest["tokenizer"]["path"]


def check_args(extra: list[str]) -> None:
    """Data flags in ARGS: refused with the DATA= that says the same."""
    given = [f for f in extra if f.split("=", 1)[0] in DATA_FLAGS]
    if given:
        raise LaunchError(
            f"ARGS {given[0].split('=', 1)[0]} cannot be honoured: the launcher sets the data "
            "(and records and checks it on resume) from DATA=; give a folder or a weighted blend "
            "DATA=0.7:data/a,0.3:data/b instead"
        )


def load_data(v: dict) -> list[Dataset]:
    """Validate DATA's datasets (building the default one if missing); return them."""
    try:
        members = parse_data(v.get("DATA", DEFAULT_DATA), REPO)
    except ValueError as err:
        raise LaunchError(str(err)) from None
    data = members[0].path
    if "DATA" not in v and not (data / "manifest.json").exists():
        print(f"{data} is missing: building the default corpus first (make data)", flush=True)
        if subprocess.run(["make", "-C", str(REPO), "data"]).returncode:
            raise LaunchError("make data failed; see its output above")
    out = [Dataset(weight=m.weight, path=m.path, manifest=_validated(m.path)) for m in members]
    for d in out:
        empty = [s for s in SPLITS if not d.manifest["splits"][s]["num_docs"]]
        if empty:
            raise LaunchError(
                f"{d.path}: the {empty[0]} split is empty (0 documents) and Megatron cannot read "
                "an empty split; rebuild it with make data FORCE=1 (it now puts a document in every "
                "split) or from more text"
            )
    check_tokenizers(out)
    return out


def _validated(path: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "data_prep", "validate", str(path)],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["validation failed"]
        raise LaunchError(lines[-1].removeprefix("error: "))
    return json.loads((path / "manifest.json").read_text())


def _tokenizer_key(d: Dataset) -> tuple:
    """What decides the token ids: the vocabulary/merges, normalizer, pre-tokenizer and added
    tokens of ``tokenizer.json`` (not its post-processor or decoder: a tokenizer exported again,
    e.g. ``make data TOKENIZER=data/a/tokenizer``, gives the same ids with another file hash),
    the vocabulary size and the EOD id."""
    tok = d.manifest["tokenizer"]
    try:
        spec = json.loads((d.tokenizer_dir / tok.get("file", "tokenizer.json")).read_text())
        ids = {k: spec.get(k) for k in ("model", "normalizer", "pre_tokenizer", "added_tokens")}
        digest = hashlib.sha256(json.dumps(ids, sort_keys=True).encode()).hexdigest()
    except (OSError, ValueError, AttributeError):
        digest = tok.get("sha256")
    return digest, tok.get("vocab_size"), tok.get("eod_id")


def check_tokenizers(datasets: list[Dataset]) -> None:
    """A blend's members share one tokenizer (file hash, vocabulary, EOD id): the odd one named."""
    keys = [_tokenizer_key(d) for d in datasets]
    counts = Counter(keys)
    if len(counts) < 2:
        return
    # the majority's tokenizer (ties: the first member's) is the blend's; the first other is odd
    common = max(counts, key=lambda k: (counts[k], k == keys[0]))
    ref = datasets[keys.index(common)]
    odd = next(d for d, k in zip(datasets, keys, strict=True) if k != common)
    tok, ref_tok = odd.manifest["tokenizer"], ref.manifest["tokenizer"]
    raise LaunchError(
        f"DATA: {odd.path} uses another tokenizer ({tok.get('kind')}, vocab {tok.get('vocab_size')}, "
        f"EOD {tok.get('eod_id')}) than {ref.path} ({ref_tok.get('kind')}, vocab "
        f"{ref_tok.get('vocab_size')}, EOD {ref_tok.get('eod_id')}); a blend needs one tokenizer: "
        f"rebuild it with make data TOKENIZER={ref.tokenizer_dir}"
    )
