"""`adopt`: Megatron `.bin/.idx` made elsewhere (Megatron-LM's preprocess_data.py) -> data/<name>/.

Nothing is re-tokenized. The index and data files are checked (sizes agree, an integer dtype, one
sequence per document), every token id must lie inside the given tokenizer's vocabulary (a
dataset made with another tokenizer is refused), and the documents are split train/valid/test by
the same rule as `build` but on the hash of each document's token ids (content, not position:
duplicates stay together), an empty held-out split taking the last training document
(`merge.fill_plan`). The split files are written by megatron-core's `IndexedDatasetBuilder` in
the tokenizer's dtype, with the tokenizer and a manifest, so `DATA=` and blends use the result
like any built dataset.
"""

import hashlib
import logging
import os
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from data_prep import FORMAT_VERSION
from data_prep.errors import DataError
from data_prep.indexfile import DocReader, read_index_summary
from data_prep.merge import fill_plan, import_builder
from data_prep.outdir import WORK, build_once
from data_prep.split import SPLITS, thresholds
from data_prep.tokenizer import prepare_existing, source_identity
from data_prep.util import sha256_file, write_json

log = logging.getLogger("data_prep")


@dataclass(kw_only=True)
class AdoptConfig:
    """`python -m data_prep adopt` / `make data ADOPT=... TOKENIZER=...`."""

    prefixes: list[Path]
    """Dataset prefixes (`<prefix>.bin`/`.idx`), concatenated in this order."""
    tokenizer: Path
    """The tokenizer the ids were made with (.model, HF dir, tiktoken file)."""
    name: str
    out_root: Path = Path("data")
    split: tuple[float, float, float] = (0.98, 0.01, 0.01)
    force: bool = False
    licence: str | None = None
    created_by: str = ""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"bad dataset name {self.name!r}: use a plain directory name")
        if not self.prefixes:
            raise ValueError("ADOPT needs at least one dataset prefix")
        if len(self.split) != 3 or min(self.split) < 0 or self.split[0] <= 0:
            raise ValueError(f"bad split {self.split}: three non-negative fractions, train > 0")
        self.prefixes = [
            Path(str(p).removesuffix(".bin").removesuffix(".idx")) for p in self.prefixes
        ]


def _check_files(prefix: Path) -> None:
    idx, bin_ = Path(f"{prefix}.idx"), Path(f"{prefix}.bin")
    for p in (idx, bin_):
        if not p.is_file():
            raise DataError(f"ADOPT: {p} is missing (give the prefix without .bin/.idx)")
    s = read_index_summary(idx)
    if s.idx_bytes != s.expected_idx_bytes:
        raise DataError(f"ADOPT: {idx} is truncated or corrupt ({s.idx_bytes} bytes, "
                        f"its header needs {s.expected_idx_bytes})")  # fmt: skip
    if bin_.stat().st_size != s.expected_bin_bytes:
        raise DataError(f"ADOPT: {bin_} has {bin_.stat().st_size} bytes, its index says "
                        f"{s.expected_bin_bytes}")  # fmt: skip
    if s.dtype.kind not in "iu":
        raise DataError(f"ADOPT: {idx} stores {s.dtype.name}, not token ids")
    if s.num_sequences != s.num_docs:
        raise DataError(
            f"ADOPT: {prefix} has {s.num_sequences} sequences in {s.num_docs} documents (split "
            "into sentences); adopt takes one sequence per document (preprocess_data.py without "
            "--split-sentences)"
        )


def fingerprint(cfg: AdoptConfig) -> dict:
    """The inputs' identity (index hash and data size), the split and the tokenizer."""
    tok = {k: v for k, v in source_identity(cfg.tokenizer).items() if k != "path"}
    return {
        "format": FORMAT_VERSION,
        "adopt": [
            {
                "prefix": str(p.resolve()),
                "idx_sha256": sha256_file(Path(f"{p}.idx")),
                "bin_bytes": Path(f"{p}.bin").stat().st_size,
            }
            for p in cfg.prefixes
        ],  # fmt: skip
        "split": list(cfg.split),
        "tokenizer": tok,
    }


def _assign(readers: list[DocReader], dtype: np.dtype, cuts, vocab: int, eod: int):
    """Split index per document (in order), and how many documents end with EOD."""
    out, ends_eod = [], 0
    for prefix, reader in readers:
        top = max((int(reader.tokens[i : i + (1 << 26)].max()) for i in
                   range(0, len(reader.tokens), 1 << 26)), default=0)  # fmt: skip
        low = min((int(reader.tokens[i : i + (1 << 26)].min()) for i in
                   range(0, len(reader.tokens), 1 << 26)), default=0)  # fmt: skip
        if top >= vocab or low < 0:
            bad = top if top >= vocab else low
            raise DataError(
                f"ADOPT: {prefix}.bin holds token id {bad}, outside the tokenizer's vocabulary "
                f"of {vocab}: it was made with another tokenizer"
            )
        for i in range(len(reader)):
            doc = reader[i]
            ends_eod += bool(len(doc)) and int(doc[-1]) == eod
            h = hashlib.blake2b(doc.astype(dtype).tobytes(), digest_size=8).digest()
            h = int.from_bytes(h, "little")
            out.append(0 if h < cuts[0] else 1 if h < cuts[1] else 2)
    return np.array(out, dtype=np.int8), ends_eod


def adopt(cfg: AdoptConfig) -> dict:
    """Write data/<name> from existing `.bin/.idx` files (a no-op when up to date)."""
    t0 = time.perf_counter()
    for p in cfg.prefixes:
        _check_files(p)
    if not Path(cfg.tokenizer).exists():
        raise DataError(f"TOKENIZER={cfg.tokenizer} does not exist")
    fp = fingerprint(cfg)
    out = cfg.out_root / cfg.name
    return build_once(out, fp, force=cfg.force, make=lambda _state: _adopt(cfg, fp, out, t0))


def _adopt(cfg: AdoptConfig, fp: dict, out: Path, t0: float) -> dict:
    work = out / WORK
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    write_json(work / "config.json", fp)
    _, tok = prepare_existing(cfg.tokenizer, work / "tokenizer")
    vocab, eod = tok["vocab_size"], tok["eod_id"]
    dtype = np.dtype(np.uint16 if vocab < 65500 else np.int32)
    readers = [(p, DocReader(p)) for p in cfg.prefixes]
    which, ends_eod = _assign(readers, dtype, thresholds(cfg.split), vocab, eod)
    counts = {s: int((which == i).sum()) for i, s in enumerate(SPLITS)}
    fill = fill_plan(counts, cfg.split)
    train_ids = np.flatnonzero(which == 0)
    for i, split in enumerate(fill):  # the last training documents, in order
        which[train_ids[len(train_ids) - len(fill) + i]] = SPLITS.index(split)
    builder_cls = import_builder()
    splits = {}
    for si, split in enumerate(SPLITS):
        builder = builder_cls(str(work / f"{split}_text_document.bin"), dtype=dtype.type)
        docs = tokens = 0
        n = 0
        for _, reader in readers:
            mine = np.flatnonzero(which[n : n + len(reader)] == si)
            for i in mine.tolist():
                doc = reader[i].astype(dtype)
                builder.add_document(doc, [len(doc)])
                docs, tokens = docs + 1, tokens + len(doc)
            n += len(reader)
        builder.finalize(str(work / f"{split}_text_document.idx"))
        splits[split] = {"prefix": f"{split}_text_document", "num_docs": docs, "num_tokens": tokens}
    if ends_eod != len(which):
        log.warning(
            "%d of %d documents do not end with EOD %d (preprocess_data.py --append-eod adds "
            "it); Megatron then joins documents without a separator",
            len(which) - ends_eod, len(which), eod,
        )  # fmt: skip
    for split in SPLITS:
        for ext in (".bin", ".idx"):
            os.replace(work / f"{split}_text_document{ext}", out / f"{split}_text_document{ext}")
    if (out / "tokenizer").exists():
        shutil.rmtree(out / "tokenizer")
    shutil.copytree(work / "tokenizer", out / "tokenizer")
    manifest = {
        "format_version": FORMAT_VERSION,
        "name": cfg.name,
        "created_by": cfg.created_by or f"data_prep.adopt.adopt({cfg!r})",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "corpus": [],
        "text_field": None,
        "sources": [
            {
                "name": str(p),
                "licence": cfg.licence or "unknown (state it with --licence)",
                "origin": "adopted Megatron .bin/.idx",
                "num_docs": len(r),
                "num_tokens": int(r.lengths.sum()),
                "dtype": r.tokens.dtype.name,
            }
            for p, r in readers
        ],  # fmt: skip
        "splits": splits,
        "split_rule": {
            "method": "blake2b-64 of the document's token ids",
            "fractions": list(cfg.split),
            **({"moved_from_train": fill} if fill else {}),
        },
        "tokenizer": tok,
        "dtype": dtype.name,
        "eod_appended": ends_eod == len(which),
        "bos_prepended": None,
        "num_records": len(which),
        "num_skipped_empty": 0,
        "fingerprint": fp,
        "build": {"adopted": True, "total_s": round(time.perf_counter() - t0, 2)},
    }
    write_json(out / "manifest.json", manifest)
    shutil.rmtree(work, ignore_errors=True)
    log.info(
        "adopted %s into %s: %s",
        ", ".join(map(str, cfg.prefixes)),
        out,
        ", ".join(f"{k} {v['num_docs']:,} docs" for k, v in splits.items()),
    )
    return manifest
