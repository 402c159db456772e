"""Reading corpus records: JSON lines (plain, by byte range; compressed), `save_to_disk`
folders, and the text of a record (one field, or several joined).

* `.jsonl.gz`, `.json.gz` (dolma's shards: JSON lines despite the name), `.jsonl.zst`,
  `.json.zst`: streamed through `gzip` / `zstandard` (never decompressed to disk). A compressed
  stream cannot be cut at byte offsets, so each file is one shard; resuming skips records as for
  any shard.
* A `save_to_disk` folder (`state.json` + `data-*.arrow`; a `DatasetDict` folder's `train`
  split): the Arrow stream files are memory-mapped with pyarrow (no `datasets` import in the
  workers) and cut into row ranges.
* `TEXT_FIELD=title,text`: the non-empty values of the fields, in the order given, joined by
  one blank line (`"\\n\\n"`); a record whose fields are all empty or null is skipped.
"""

import functools
import io
import json
from collections.abc import Iterator
from pathlib import Path

from data_prep.errors import DataError

COMPRESSED = {".jsonl.gz": "gz", ".json.gz": "gz", ".jsonl.zst": "zst", ".json.zst": "zst"}
JOIN = "\n\n"
"""Separator between the values of several text fields."""


@functools.cache
def fields_of(text_field: str) -> list[str]:
    """`title,text` -> ["title", "text"] (cached: called once per record)."""
    fields = [f.strip() for f in text_field.split(",")]
    if not all(fields):
        raise DataError(f"TEXT_FIELD={text_field!r} has an empty name; e.g. TEXT_FIELD=title,text")
    return fields


def join_fields(values: list) -> str | None:
    """Several fields' values as one document (None when all are null)."""
    if len(values) == 1:
        return values[0]
    parts = [v for v in values if v is not None and v.strip()]
    return JOIN.join(parts) if parts else None


def compression(path: str | Path) -> str | None:
    """`gz`/`zst` for a compressed JSON-lines file, else None."""
    name = Path(path).name
    return next((c for suffix, c in COMPRESSED.items() if name.endswith(suffix)), None)


def is_arrow_folder(path: Path) -> bool:
    """A `save_to_disk` folder (a Dataset, or a DatasetDict with a `train` split)."""
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def arrow_files(folder: str | Path) -> list[str]:
    """The Arrow files of a `save_to_disk` folder, in order."""
    folder = Path(folder)
    if (folder / "dataset_dict.json").is_file():
        splits = json.loads((folder / "dataset_dict.json").read_text()).get("splits", [])
        if "train" not in splits:
            raise DataError(
                f"{folder} is a DatasetDict without a 'train' split (splits: {', '.join(splits)}); "
                f"give the split's folder, e.g. {folder}/{splits[0] if splits else 'train'}"
            )
        folder = folder / "train"
    try:
        state = json.loads((folder / "state.json").read_text())
        files = [str(folder / f["filename"]) for f in state["_data_files"]]
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as e:
        raise DataError(f"{folder}/state.json is not a save_to_disk state ({e})") from e
    if state.get("_indices_data_files"):
        raise DataError(f"{folder} holds an index mapping; save it with flatten_indices() first")
    return files


def _arrow_table(path: str):
    import pyarrow as pa

    try:
        return pa.ipc.open_stream(pa.memory_map(path)).read_all()
    except (OSError, pa.ArrowInvalid) as e:
        raise DataError(f"{path}: not a readable Arrow stream file ({e})") from e


def arrow_rows(path: str) -> int:
    return _arrow_table(path).num_rows


def arrow_columns(path: str) -> list[str]:
    return _arrow_table(path).column_names


def iter_arrow(path: str, start: int, end: int, fields: list[str]) -> Iterator[str | None]:
    """Texts of rows [start, end) of one Arrow file (several fields joined)."""
    table = _arrow_table(path)
    missing = [f for f in fields if f not in table.column_names]
    if missing:
        raise DataError(
            f"{path} has no column {missing[0]!r} (columns: {', '.join(table.column_names)}); "
            "set TEXT_FIELD="
        )
    for offset in range(start, end, 4096):
        part = table.slice(offset, min(4096, end - offset))
        columns = [part.column(f).to_pylist() for f in fields]
        for values in zip(*columns, strict=True):
            yield join_fields(list(values))


def open_compressed(path: str) -> io.BufferedIOBase:
    """A binary stream of the decompressed file."""
    if compression(path) == "gz":
        import gzip

        return gzip.open(path, "rb")
    import zstandard

    raw = open(path, "rb")  # noqa: SIM115 -- closed with the reader (closefd)
    reader = zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
    return io.BufferedReader(reader, buffer_size=1 << 20)


def iter_compressed_lines(path: str) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of the non-blank lines of a compressed JSON-lines file."""
    import gzip

    import zstandard

    try:
        with open_compressed(path) as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    yield number, line
    except (OSError, EOFError, gzip.BadGzipFile, zstandard.ZstdError) as e:
        raise DataError(f"{path}: cannot decompress ({e})") from e


def json_record(line, path, where: int, kind: str = "jsonl"):
    """One jsonl record; a DataError naming the file and byte offset (line number of a
    compressed file) if it is not JSON."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        at = f"line {where}" if kind == "jsonl-z" else f"the line at byte {where}"
        raise DataError(f"{path}: invalid JSON in {at} ({e.msg})") from e


def iter_lines(path: str, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(offset, line) of non-blank lines that *start* in [start, end): each line belongs to
    exactly one range."""
    with open(path, "rb") as f:
        if start > 0:
            f.seek(start - 1)
            f.readline()  # finish the line that straddles `start` (owned by the previous range)
        pos = f.tell()
        while pos < end:
            line = f.readline()
            if not line:
                break
            if line.strip():
                yield pos, line
            pos += len(line)


def lines(path: str, kind: str, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(where, line): byte offsets of a plain file's range, line numbers of a compressed one."""
    if kind == "jsonl-z":
        return iter_compressed_lines(path)
    return iter_lines(path, start, end)


def text_of(record: object, text_field: str, where: str) -> str | None:
    """The record's text: one field, or several joined (`join_fields`)."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: records must be JSON objects with a {text_field!r} field")
    values = []
    for name in fields_of(text_field):
        if name not in record:
            fields = ", ".join(list(record)[:10])
            raise DataError(
                f"{where}: no field {name!r} in records (fields: {fields}); set TEXT_FIELD="
            )
        text = record[name]
        if text is not None and not isinstance(text, str):
            raise DataError(f"{where}: field {name!r} is {type(text).__name__}, not text")
        values.append(text)
    return join_fields(values)
