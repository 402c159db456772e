"""Tokenize one shard into per-split token pieces; runs inside pool workers.

A shard's output is a sequence of *pieces*, each committed by writing its `pNNNN.json` marker
last (after its token files are renamed into place); `done.json` marks the whole shard. After
an interruption a shard resumes after its last committed piece by skipping that many input
records, so finished work is never redone and half-written files (temporary names) are
ignored. Pieces only bound the work lost; the merged dataset is the same for any piece size.
Workers import only numpy and the tokenizer's own library.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.corpus import Shard, iter_texts
from data_prep.encoders import EncoderSpec, make_encoder
from data_prep.split import SPLITS, split_of, utf8
from data_prep.util import read_json, write_json

Progress = Callable[[int, int], None]
"""Called with (text bytes, tokens) after each encoded batch."""


@dataclass(frozen=True, kw_only=True)
class ShardTask:
    """Everything a worker needs to process one shard (picklable)."""

    shard: Shard
    shard_dir: str
    text_field: str
    encoder: EncoderSpec
    cuts: tuple[int, int]
    eod_id: int
    dtype: str
    flush_bytes: int = 64 << 20
    """Commit a piece after this many bytes of text (bounds the work an interruption loses)."""
    batch_bytes: int = 1 << 20
    """Encode this much text per tokenizer call."""
    heldout_per_piece: int = 4
    """Held-out documents kept per piece (and split) for the post-build id check."""


def piece_files(shard_dir: Path, piece: int, split: str) -> tuple[Path, Path]:
    """(tokens, lengths) files of one split of one piece."""
    return shard_dir / f"p{piece:04d}.{split}.bin", shard_dir / f"p{piece:04d}.{split}.len"


def committed_pieces(shard_dir: Path) -> list[dict]:
    """Markers of the contiguous run of committed pieces, in order."""
    out = []
    while (marker := shard_dir / f"p{len(out):04d}.json").exists():
        out.append(read_json(marker))
    return out


class _PieceWriter:
    def __init__(self, task: ShardTask, piece: int) -> None:
        self.task, self.piece = task, piece
        self.dtype = np.dtype(task.dtype)
        self.reset()

    def reset(self) -> None:
        self.tokens: list[list[np.ndarray]] = [[] for _ in SPLITS]
        self.lengths: list[list[int]] = [[] for _ in SPLITS]
        self.nbytes = [0, 0, 0]
        self.records = self.skipped = self.text_bytes = 0
        self.heldout: list[dict] = []

    def add(self, split: int, text: str, data: bytes, ids: list[int]) -> None:
        arr = np.empty(len(ids) + 1, dtype=self.dtype)
        arr[:-1] = ids
        arr[-1] = self.task.eod_id  # EOD after every document
        if (
            split
            and sum(h["split"] == SPLITS[split] for h in self.heldout) < self.task.heldout_per_piece
        ):
            if len(text) <= 20_000:  # keep markers small
                self.heldout.append(
                    {"split": SPLITS[split], "doc": len(self.lengths[split]), "text": text}
                )
        self.tokens[split].append(arr)
        self.lengths[split].append(len(arr))
        self.nbytes[split] += len(data)

    def commit(self) -> dict:
        shard_dir, pid = Path(self.task.shard_dir), os.getpid()
        for s, name in enumerate(SPLITS):
            tok_path, len_path = piece_files(shard_dir, self.piece, name)
            arr = np.concatenate(self.tokens[s]) if self.tokens[s] else np.empty(0, self.dtype)
            for path, data in [(tok_path, arr), (len_path, np.asarray(self.lengths[s], np.int32))]:
                tmp = path.with_name(f".{path.name}.{pid}.tmp")
                data.tofile(tmp)
                os.replace(tmp, path)
        marker = {
            "records": self.records,
            "skipped": self.skipped,
            "splits": {
                name: {
                    "num_docs": len(self.lengths[s]),
                    "num_tokens": int(sum(self.lengths[s])),
                    "num_bytes": self.nbytes[s],
                }
                for s, name in enumerate(SPLITS)
            },
            "heldout": self.heldout,
        }
        write_json(shard_dir / f"p{self.piece:04d}.json", marker)
        self.piece += 1
        self.reset()
        return marker


def run_shard(task: ShardTask, progress: Progress | None = None) -> dict:
    """Tokenize `task.shard` (resuming after committed pieces); returns its done record."""
    shard_dir = Path(task.shard_dir)
    if (shard_dir / "done.json").exists():
        return read_json(shard_dir / "done.json")
    shard_dir.mkdir(parents=True, exist_ok=True)
    pieces = committed_pieces(shard_dir)
    encoder = make_encoder(task.encoder)
    writer = _PieceWriter(task, len(pieces))
    batch: list[tuple[str, bytes]] = []
    batch_bytes = 0

    def encode_batch() -> None:
        nonlocal batch, batch_bytes
        if not batch:
            return
        ids_list = encoder.encode_batch([t for t, _ in batch])
        ntok = 0
        for (text, data), ids in zip(batch, ids_list, strict=True):
            writer.add(split_of(data, task.cuts), text, data, ids)
            ntok += len(ids) + 1
        if progress:
            progress(batch_bytes, ntok)
        batch, batch_bytes = [], 0

    for text in iter_texts(task.shard, task.text_field, skip=sum(p["records"] for p in pieces)):
        writer.records += 1
        if text is None or not text.strip():
            writer.skipped += 1
            continue
        text, data = utf8(text)
        batch.append((text, data))
        batch_bytes += len(data)
        writer.text_bytes += len(data)
        if batch_bytes >= task.batch_bytes:
            encode_batch()
            if writer.text_bytes >= task.flush_bytes:
                pieces.append(writer.commit())
    encode_batch()
    if writer.records or not pieces:
        pieces.append(writer.commit())
    done = {
        "shard": task.shard.index,
        "source": task.shard.source,
        "pieces": len(pieces),
        "records": sum(p["records"] for p in pieces),
        "skipped": sum(p["skipped"] for p in pieces),
    }
    write_json(shard_dir / "done.json", done)
    return done
