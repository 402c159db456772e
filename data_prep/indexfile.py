"""Cheap, dependency-free reading of Megatron `.idx`/`.bin` pairs.

Importing megatron-core costs ~5 s and ~900 MB, too much for `validate` (run before every
training job and by the `make data` no-op) and for spot checks after a build. The format is
small and stable (megatron/core/datasets/indexed_dataset.py, `_IndexWriter`); tests check this
reader against megatron's own `IndexedDataset`. Files are *written* only by megatron-core's
`IndexedDatasetBuilder` (see data_prep.merge).
"""

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.errors import DataError

_MAGIC = b"MMIDIDX\x00\x00"
_HEADER = struct.Struct("<9sQBQQ")  # magic, version, dtype code, sequence count, document count
_DTYPES = {
    1: np.uint8,
    2: np.int8,
    3: np.int16,
    4: np.int32,
    5: np.int64,
    6: np.float64,
    7: np.float32,
    8: np.uint16,
}


@dataclass(frozen=True)
class IndexSummary:
    """What an `.idx` file says about its `.bin`, read without touching the token data."""

    dtype: np.dtype
    num_sequences: int
    num_docs: int
    num_tokens: int
    idx_bytes: int
    expected_idx_bytes: int
    expected_bin_bytes: int


def read_index_summary(idx_path: Path) -> IndexSummary:
    """Read header and the last sequence pointer; raises DataError on a malformed file."""
    size = idx_path.stat().st_size
    with idx_path.open("rb") as f:
        head = f.read(_HEADER.size)
        if len(head) < _HEADER.size:
            raise DataError(
                f"{idx_path} is truncated ({size} bytes, header alone is {_HEADER.size})"
            )
        magic, version, code, num_seq, num_doc_idx = _HEADER.unpack(head)
        if magic != _MAGIC or version != 1 or code not in _DTYPES:
            raise DataError(f"{idx_path} is not a Megatron index file (bad header)")
        dtype = np.dtype(_DTYPES[code])
        # lengths (int32) + pointers (int64) per sequence, then int64 document indices.
        expected = _HEADER.size + num_seq * (4 + 8) + num_doc_idx * 8
        num_tokens = 0
        if num_seq and size >= expected:
            f.seek(_HEADER.size + (num_seq - 1) * 4)
            (last_len,) = struct.unpack("<i", f.read(4))
            f.seek(_HEADER.size + num_seq * 4 + (num_seq - 1) * 8)
            (last_ptr,) = struct.unpack("<q", f.read(8))
            num_tokens = last_ptr // dtype.itemsize + last_len
    return IndexSummary(
        dtype=dtype,
        num_sequences=num_seq,
        num_docs=max(num_doc_idx - 1, 0),
        num_tokens=num_tokens,
        idx_bytes=size,
        expected_idx_bytes=expected,
        expected_bin_bytes=num_tokens * dtype.itemsize,
    )


class DocReader:
    """Random access to documents of a dataset prefix (one sequence per document, as we write)."""

    def __init__(self, prefix: Path) -> None:
        idx_path = Path(f"{prefix}.idx")
        summary = read_index_summary(idx_path)
        n = summary.num_sequences
        self.lengths = np.fromfile(idx_path, dtype=np.int32, count=n, offset=_HEADER.size)
        self.pointers = np.fromfile(idx_path, dtype=np.int64, count=n, offset=_HEADER.size + 4 * n)
        bin_path = Path(f"{prefix}.bin")
        # numpy cannot memory-map an empty file (an empty split of a tiny corpus).
        empty = bin_path.stat().st_size == 0
        self.tokens = (
            np.empty(0, summary.dtype)
            if empty
            else np.memmap(bin_path, dtype=summary.dtype, mode="r")
        )

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> np.ndarray:
        start = int(self.pointers[i]) // self.tokens.itemsize
        return np.asarray(self.tokens[start : start + int(self.lengths[i])])
