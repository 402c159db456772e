"""What to do with an output directory that may already exist.

Researchers build once and train many runs, and training calls `make data` whenever data is
missing, so a complete output with the same fingerprint must be a fast no-op; an unfinished one
with the same fingerprint is resumed; anything else is refused with one line unless FORCE=1.
FORCE never deletes a directory that data_prep did not create.
"""

import fcntl
import logging
import shutil
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from data_prep.errors import DataError
from data_prep.util import read_json

log = logging.getLogger("data_prep")

WORK = ".work"
"""In-progress state inside data/<name>/ (plan, tokenizer, shard pieces); removed when done."""


def describe_tokenizer(identity: dict) -> str:
    if "train" in identity:
        return f"a SentencePiece BPE tokenizer trained with vocab {identity['vocab_size']}"
    return f"the {identity['kind']} tokenizer with sha256 {identity['sha256'][:12]}"


def _differences(old: dict, new: dict) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(keys) or "format"


def _wipe(out: Path) -> None:
    shutil.rmtree(out)
    out.mkdir(parents=True)


def prepare_output(out: Path, fingerprint: dict, *, force: bool, rebuild_hint: str) -> str:
    """Return "fresh", "resume" or "done" (an up-to-date, valid output), or raise DataError."""
    from data_prep.validate import validate_dataset

    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        out.mkdir(parents=True, exist_ok=True)
        return "fresh"
    if not out.is_dir():
        raise DataError(f"{out} exists and is not a directory; choose another NAME")
    manifest_path, config_path = out / "manifest.json", out / WORK / "config.json"
    if manifest_path.exists():
        if force:
            _wipe(out)
            return "fresh"
        old = read_json(manifest_path).get("fingerprint", {})
        if old == fingerprint:
            try:
                validate_dataset(out)
            except DataError as e:
                raise DataError(f"{out} is damaged ({e}); rebuild with {rebuild_hint}") from e
            return "done"
        if old.get("tokenizer") != fingerprint["tokenizer"]:
            raise DataError(
                f"{out} was built with {describe_tokenizer(old.get('tokenizer', {}))}, not "
                f"{describe_tokenizer(fingerprint['tokenizer'])}; use another NAME or overwrite with {rebuild_hint}"
            )
        raise DataError(
            f"{out} was built from different settings ({_differences(old, fingerprint)}); "
            f"use another NAME or overwrite with {rebuild_hint}"
        )
    if config_path.exists():
        if read_json(config_path) == fingerprint:
            return "resume"
        if force:
            _wipe(out)
            return "fresh"
        raise DataError(
            f"{out} holds an unfinished build with other settings; re-run its command to "
            f"finish it, or discard it with {rebuild_hint}"
        )
    raise DataError(f"{out} exists and is not a data_prep output; choose another NAME")


@contextmanager
def build_lock(out: Path):
    """Exclusive lock on data/<name> (a file beside it), so concurrent `make data` calls, e.g.
    from several training jobs, build once: the others wait, then find the output up to date."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another build of %s to finish", out)
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def build_once(out: Path, fp: dict, *, force: bool, make: Callable[[str], dict]) -> dict:
    """The one way a data_prep output is made: under ``build_lock``, ``make(state)`` unless the
    output is up to date (then its manifest); a failed first build (bad input) leaves no
    half-made directory behind. ``state`` is ``prepare_output``'s ("fresh" or "resume")."""
    with build_lock(out):
        existed = out.exists()
        state = prepare_output(out, fp, force=force, rebuild_hint="FORCE=1 (--force)")
        if state == "done":
            log.info("%s is up to date", out)
            return read_json(out / "manifest.json")
        try:
            return make(state)
        except DataError:
            if not existed:
                shutil.rmtree(out, ignore_errors=True)
            raise
