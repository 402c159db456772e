"""Cheap integrity check of data/<name>/, run by `python -m data_prep validate` and by training.

Catches the failures that otherwise surface as obscure errors (or silently wrong batches) deep
inside Megatron: a missing directory or manifest, missing or truncated .bin/.idx files, counts
that disagree with the manifest, a missing or altered tokenizer. It reads only headers, file
sizes and the tokenizer file, never the token data, so it costs milliseconds on any corpus.
`deep=True` additionally reads every document through megatron-core and checks EOD placement.
"""

import json
from pathlib import Path

from data_prep.errors import DataError
from data_prep.indexfile import read_index_summary
from data_prep.split import SPLITS
from data_prep.util import sha256_file


def _load_manifest(path: Path) -> tuple[Path, dict]:
    path = Path(path)
    root = path.parent if path.name == "manifest.json" else path
    if not root.is_dir():
        raise DataError(f"no dataset at {root}: build it with `make data` (NAME={root.name})")
    manifest_path = root / "manifest.json"
    if not manifest_path.exists():
        hint = (
            "an unfinished build; re-run its `make data` command to finish it"
            if (root / ".work").exists()
            else "not a dataset"
        )
        raise DataError(
            f"{root} has no manifest.json ({hint}); build it with `make data NAME={root.name}`"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        manifest["splits"], manifest["tokenizer"]  # noqa: B018 -- required keys
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(
            f"{manifest_path} is unreadable ({e}); rebuild with `make data NAME={root.name} FORCE=1`"
        ) from e
    return root, manifest


def validate_dataset(path: str | Path, *, deep: bool = False) -> dict:
    """Check data/<name> (or its manifest.json) and return the manifest.

    Raises DataError with a one-line message naming the fix for: missing dir/manifest,
    missing or truncated .bin/.idx, token/document counts that differ from the manifest, and
    a missing or modified tokenizer.
    """
    root, manifest = _load_manifest(Path(path))
    fix = f"rebuild with `make data NAME={manifest.get('name', root.name)} FORCE=1`"
    for split in SPLITS:
        entry = manifest["splits"].get(split)
        if entry is None:
            raise DataError(f"{root}/manifest.json has no {split!r} split; {fix}")
        prefix = root / entry["prefix"]
        idx, bin_ = Path(f"{prefix}.idx"), Path(f"{prefix}.bin")
        for p in (idx, bin_):
            if not p.is_file():
                raise DataError(f"{p} is missing; {fix}")
        summary = read_index_summary(idx)
        if summary.idx_bytes != summary.expected_idx_bytes:
            raise DataError(
                f"{idx} is truncated or corrupt ({summary.idx_bytes} bytes, expected "
                f"{summary.expected_idx_bytes}); {fix}"
            )
        bin_bytes = bin_.stat().st_size
        if bin_bytes != summary.expected_bin_bytes:
            what = (
                "truncated" if bin_bytes < summary.expected_bin_bytes else "longer than its index"
            )
            raise DataError(
                f"{bin_} is {what} ({bin_bytes} bytes, index says {summary.expected_bin_bytes}); {fix}"
            )
        if (summary.num_docs, summary.num_tokens) != (entry["num_docs"], entry["num_tokens"]):
            raise DataError(
                f"{prefix} holds {summary.num_docs} docs/{summary.num_tokens} tokens but the manifest "
                f"says {entry['num_docs']}/{entry['num_tokens']}; {fix}"
            )
        if summary.dtype.name != manifest.get("dtype", summary.dtype.name):
            raise DataError(
                f"{idx} stores {summary.dtype.name}, manifest says {manifest['dtype']}; {fix}"
            )
    tok = manifest["tokenizer"]
    tok_file = root / tok["path"] / tok.get("file", "tokenizer.json")
    if not tok_file.is_file():
        raise DataError(f"tokenizer file {tok_file} is missing; {fix}")
    if "sha256" in tok and sha256_file(tok_file) != tok["sha256"]:
        raise DataError(f"{tok_file} differs from the tokenizer the data was built with; {fix}")
    if deep:
        _deep_check(root, manifest, fix)
    return manifest


def _deep_check(root: Path, manifest: dict, fix: str) -> None:
    """Open each split with megatron-core, then scan all tokens in chunks: every document ends
    with EOD and every id is inside the vocabulary."""
    import logging
    import warnings

    import numpy as np

    from data_prep.indexfile import DocReader

    # torch's "No CUDA runtime" log and megatron's "could not determine rank" are noise here.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets.indexed_dataset import IndexedDataset

    eod, vocab = manifest["tokenizer"]["eod_id"], manifest["tokenizer"]["vocab_size"]
    chunk = 1 << 26  # tokens per read: bounded memory on any corpus size
    for split in SPLITS:
        prefix = root / manifest["splits"][split]["prefix"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            num_docs = len(IndexedDataset(str(prefix)))
        if num_docs != manifest["splits"][split]["num_docs"]:
            raise DataError(f"megatron-core reads a different document count for {prefix}; {fix}")
        reader = DocReader(prefix)
        ends = np.cumsum(reader.lengths.astype(np.int64)) - 1
        if len(ends) and not np.all(reader.tokens[ends] == eod):
            raise DataError(f"{split}: some documents do not end with EOD {eod}; {fix}")
        for start in range(0, len(reader.tokens), chunk):
            top = int(reader.tokens[start : start + chunk].max())
            if top >= vocab:
                raise DataError(f"{split}: token id {top} >= vocab size {vocab}; {fix}")
