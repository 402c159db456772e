"""Concatenate shard pieces into one Megatron dataset per split, and spot-check the result.

The final `.bin/.idx` files are written by megatron-core's own `IndexedDatasetBuilder` (one
sequence per document, one document per source document), so GPTDataset and
BlendedMegatronDatasetBuilder read them without conversion. Megatron is imported only here,
once per build, because the import alone takes ~5 s.
"""

import logging
import os
import time
import warnings
from pathlib import Path

import numpy as np

from data_prep.encoders import EncoderSpec, make_encoder
from data_prep.errors import DataError
from data_prep.indexfile import DocReader
from data_prep.shards import piece_files
from data_prep.split import SPLITS

log = logging.getLogger("data_prep")


def import_builder():
    t = time.perf_counter()
    # "No CUDA runtime", "Transformer Engine and Apex are not installed": irrelevant here.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder
    log.debug("megatron-core imported in %.1fs", time.perf_counter() - t)
    return IndexedDatasetBuilder


def split_counts(shard_dirs: list[Path], pieces: list[int]) -> dict[str, int]:
    """Documents per split in the shard pieces (their length files only)."""
    counts = dict.fromkeys(SPLITS, 0)
    for shard_dir, n in zip(shard_dirs, pieces, strict=True):
        for piece in range(n):
            for split in SPLITS:
                counts[split] += piece_files(shard_dir, piece, split)[1].stat().st_size // 4
    return counts


def fill_plan(counts: dict[str, int], fractions: tuple[float, float, float]) -> list[str]:
    """The held-out splits (share > 0) the hash rule left empty: each gets one training document.

    A small corpus can hash no document into a 1% split; Megatron cannot read an empty split
    (`cannot mmap an empty file`). The last training documents in corpus order move there, which
    depends only on the corpus and the split rule, never on sharding. Raises DataError when the
    corpus has fewer documents than the splits that must hold one.
    """
    wanted = [s for s, f in zip(SPLITS, fractions, strict=True) if f > 0]
    total = sum(counts.values())
    if total < len(wanted):
        rule = ",".join(f"{f:g}" for f in fractions)
        raise DataError(
            f"the corpus has {total} document(s); the split {rule} needs at least {len(wanted)} "
            f"(one per split): add documents"
        )
    empty = [s for s in wanted if s != "train" and counts[s] == 0]
    if counts["train"] - len(empty) < 1:
        raise DataError(
            f"the corpus has {total} document(s) and only {counts['train']} in the training "
            f"split; it needs at least {len(empty) + 1} there: add documents"
        )
    return empty


def merge(
    shard_dirs: list[Path],
    pieces: list[int],
    out_dir: Path,
    tmp_dir: Path,
    dtype: np.dtype,
    fill: list[str] = (),
) -> dict:
    """Write `<split>_text_document.bin/.idx` into out_dir; returns per-split doc/token counts.

    `fill` (from `fill_plan`): splits that get one of the last training documents each, in order.
    """
    builder_cls = import_builder()
    tmp_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    keep = split_counts(shard_dirs, pieces)["train"] - len(fill)  # train docs that stay
    moved: list[np.ndarray] = []
    for split in SPLITS:
        tmp_prefix = tmp_dir / f"{split}_text_document"
        builder = builder_cls(f"{tmp_prefix}.bin", dtype=dtype.type)
        num_docs = num_tokens = 0
        for shard_dir, n in zip(shard_dirs, pieces, strict=True):
            for piece in range(n):
                tok_path, len_path = piece_files(shard_dir, piece, split)
                tokens = np.fromfile(tok_path, dtype=dtype)
                lengths = np.fromfile(len_path, dtype=np.int32)
                if int(lengths.sum()) != len(tokens):
                    raise DataError(
                        f"{tok_path} does not match its lengths; delete {shard_dir} and re-run"
                    )
                start = 0
                for length in lengths.tolist():
                    doc = tokens[start : start + length]
                    start += length
                    if split == "train" and num_docs >= keep:
                        moved.append(doc)
                        continue
                    builder.add_document(doc, [length])
                    num_docs += 1
                    num_tokens += length
        if split in fill:
            doc = moved[list(fill).index(split)]
            builder.add_document(doc, [len(doc)])
            num_docs += 1
            num_tokens += len(doc)
        builder.finalize(f"{tmp_prefix}.idx")
        counts[split] = {
            "prefix": f"{split}_text_document",
            "num_docs": num_docs,
            "num_tokens": num_tokens,
        }
    for split in SPLITS:
        for ext in (".bin", ".idx"):
            os.replace(
                tmp_dir / f"{split}_text_document{ext}", out_dir / f"{split}_text_document{ext}"
            )
    return counts


def check_heldout(
    out_dir: Path,
    samples: list[tuple[str, int, str]],
    encoder: EncoderSpec,
    eod_id: int,
    *,
    roundtrip: bool,
) -> int:
    """Re-encode sampled held-out documents and compare with what the .bin holds.

    `samples` are (split, document index within the split, text). Returns how many were checked.
    """
    enc = make_encoder(encoder)
    readers = {s: DocReader(out_dir / f"{s}_text_document") for s in {s for s, _, _ in samples}}
    expected = enc.encode_batch([t for _, _, t in samples])
    for (split, doc, text), ids in zip(samples, expected, strict=True):
        stored = readers[split][doc].tolist()
        if stored != [*ids, eod_id]:
            raise DataError(
                f"{split} document {doc} in the .bin differs from re-encoding its text; this is a data_prep bug"
            )
        if roundtrip and enc.decode(stored[:-1]) != text:
            raise DataError(
                f"{split} document {doc} does not decode back to its text; this is a data_prep bug"
            )
    return len(samples)
