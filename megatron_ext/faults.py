"""Faults a long run meets, each ending in one ``error:`` line and a documented exit code.

The README table "What happens when ..." lists them. The launcher calls ``checkpoint_problem`` /
``check_data`` before anything starts (exit code 2; ``launcher.watch`` reads torchrun's output so
the last line of a failed multi-process run is ours, naming the rank and the last checkpoint), the
trainer calls ``report_failure`` on an exception that ends ``pretrain()`` (disk full, a collective
timeout, an unloadable checkpoint). Nothing here deletes: a bad checkpoint is renamed aside.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import re
import shutil
import sys
import time
from pathlib import Path

from common.files import TRACKER, atomic_write_text
from megatron_ext.resume import last_checkpoint

EXIT_REFUSED = 2  # bad settings, an unreadable checkpoint, a changed dataset (before anything runs)
EXIT_NAN = 3  # NaN/inf in the loss or gradients (train.py)
EXIT_DISK_FULL = 4  # no space left while saving a checkpoint or writing logs
EXIT_RANK_DIED = 5  # a rank was killed or crashed; torchrun stopped the others
EXIT_COLLECTIVE_TIMEOUT = 6  # a collective waited longer than COLLECTIVE_TIMEOUT
EXIT_OUT_OF_MEMORY = 7  # a GPU ran out of memory (torch.OutOfMemoryError)
DEFAULT_COLLECTIVE_TIMEOUT_S = 600
CKPT_FALLBACK = "CKPT_FALLBACK"
ALLOW_DATA_CHANGE = "ALLOW_DATA_CHANGE"


class FaultError(ValueError):
    """A refusal the launcher prints as one ``error:`` line (exit code 2)."""


# ---- checkpoints -------------------------------------------------------------------------


def checkpoint_problem(iter_dir: Path) -> str | None:
    """What makes Megatron's checkpoint ``iter_dir`` unloadable, from its files alone; None if
    nothing. torch_dist checkpoints: ``metadata.json`` parses, ``.metadata`` (a pickled
    torch.distributed.checkpoint ``Metadata``) loads, and every shard file its ``storage_data``
    names exists and holds every byte range it lists. Other formats are only checked to exist."""
    if not iter_dir.is_dir():
        return "the folder is missing"
    try:
        backend = json.loads((iter_dir / "metadata.json").read_text()).get("sharded_backend")
    except FileNotFoundError:
        return None if any(iter_dir.glob("mp_rank_*")) else "metadata.json is missing"
    except (OSError, ValueError, AttributeError) as err:
        return f"metadata.json is unreadable ({type(err).__name__})"
    if backend != "torch_dist":
        return None
    try:
        with (iter_dir / ".metadata").open("rb") as f:
            metadata = pickle.load(f)
        storage = metadata.storage_data
        ends: dict[str, int] = {}
        for info in storage.values():
            ends[info.relative_path] = max(
                ends.get(info.relative_path, 0), info.offset + info.length
            )
    except FileNotFoundError:
        return ".metadata is missing"
    except Exception as err:  # a torn pickle raises anything from EOFError to AttributeError
        return f".metadata is unreadable ({type(err).__name__}: {err})"[:200]
    for name, expected in sorted(ends.items()):
        shard = iter_dir / name
        if not shard.is_file():
            return f"shard {name} is missing"
        size = shard.stat().st_size
        if size < expected:
            return f"shard {name} is truncated ({size} bytes, its metadata needs {expected})"
    return None


def _iterations(save_dir: Path) -> list[int]:
    names = (p.name[len("iter_") :] for p in save_dir.glob("iter_*") if p.is_dir())
    return sorted((int(n) for n in names if n.isdigit()), reverse=True)


def check_checkpoint(save_dir: Path, *, fallback: bool) -> tuple[int, int | None, str] | None:
    """Check the checkpoint the tracker names. Returns None when it loads (or there is none),
    else ``(bad iteration, newest readable older iteration or None, problem)`` when ``fallback``
    allows setting it aside; raises FaultError otherwise."""
    last = last_checkpoint(save_dir)
    if last is None:
        return None
    problem = checkpoint_problem(save_dir / f"iter_{last:07d}")
    if problem is None:
        return None
    good = next(
        (
            i
            for i in _iterations(save_dir)
            if i < last and not checkpoint_problem(_dir(save_dir, i))
        ),
        None,
    )
    if fallback and good is not None:
        return last, good, problem
    bad = _dir(save_dir, last)
    if good is None:
        raise FaultError(
            f"checkpoint {bad} is unreadable ({problem}) and no older checkpoint is readable; "
            "restore it from a copy, or start a new RUN=name"
        )
    raise FaultError(
        f"checkpoint {bad} is unreadable ({problem}); rerun with {CKPT_FALLBACK}=1 to set it "
        f"aside and resume from iter_{good:07d}, the newest readable one"
    )


def _dir(save_dir: Path, iteration: int) -> Path:
    return save_dir / f"iter_{iteration:07d}"


def fall_back(save_dir: Path, bad: int, good: int) -> list[Path]:
    """Rename every ``iter_N`` newer than ``good`` to ``iter_N.unreadable-<time>`` and point the
    tracker at ``good`` (written atomically). Returns the new paths."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = []
    for i in _iterations(save_dir):
        if good < i <= bad:
            path = _dir(save_dir, i)
            moved.append(path.rename(path.with_name(f"{path.name}.unreadable-{stamp}")))
    atomic_write_text(save_dir / TRACKER, str(good))
    return moved


# ---- dataset fingerprint ----------------------------------------------------------------


def data_fingerprint(manifest: dict) -> str:
    """16 hex digits over what decides the token stream: the build fingerprint data_prep records
    (corpus, split rule, tokenizer recipe), each split's document and token counts and the
    tokenizer file's hash."""
    splits = manifest.get("splits", {})
    key = {
        "build": manifest.get("fingerprint"),
        "splits": {s: [e.get("num_docs"), e.get("num_tokens")] for s, e in sorted(splits.items())},
        "tokenizer": manifest.get("tokenizer", {}).get("sha256"),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


Members = list[tuple[float, Path, dict]]
"""A run's data: (normalised weight, dataset folder, manifest) per member; one member alone."""


def blend_fingerprint(members: Members) -> str:
    """A single dataset's ``data_fingerprint``; for a blend, 16 hex digits over its members'
    weights and fingerprints (another weight is another token stream)."""
    if len(members) == 1:
        return data_fingerprint(members[0][2])
    key = [[round(w, 6), data_fingerprint(m)] for w, _, m in members]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]


def _describe(members: Members) -> str:
    if len(members) == 1:
        return str(members[0][1])
    return ",".join(f"{w:.6g}:{p}" for w, p, _ in members)


def _member_change(record: dict, members: Members) -> str:
    """What changed in a blend, when both the record and DATA are blends: one member or weights."""
    old = record.get("data_members")
    if not old or len(members) < 2:
        return ""
    if len(old) != len(members) or any(
        abs(o["weight"] - w) > 1e-6 for o, (w, _, _) in zip(old, members, strict=True)
    ):
        return " (the members or their weights differ)"
    for o, (_, path, manifest) in zip(old, members, strict=True):
        fp = data_fingerprint(manifest)
        if o["data_fingerprint"] != fp:
            return f" (member {path} has fingerprint {fp}, it was {o['data_fingerprint']})"
    return ""


def check_data(record: dict, members: Members, *, run: str, allow: bool) -> None:
    """Refuse to resume ``run`` on data whose fingerprint differs from the one it was trained on
    (``record``: its launch.json), unless ``allow``; a blend is checked member by member. Records
    without one pass."""
    old = record.get("data_fingerprint")
    new = blend_fingerprint(members)
    if old is None or old == new or allow:
        return
    raise FaultError(
        f"the dataset changed under {run}: it was trained on {record.get('data')} (fingerprint "
        f"{old}), DATA={_describe(members)} has fingerprint {new}{_member_change(record, members)}; "
        f"use the original data, or add {ALLOW_DATA_CHANGE}=1 if the change is intended"
    )


def missing_data_hint(record: dict) -> str:
    """What a run recorded about its data, for the error when that data is gone."""
    if not record.get("data_fingerprint"):
        return ""
    return (
        f" (this run was trained on {record.get('data')}, fingerprint {record['data_fingerprint']})"
    )


def data_record(old: dict, members: Members) -> dict:
    """launch.json entries for the data (a blend: also each member's weight and fingerprint); an
    earlier, different dataset moves to data_history."""
    fp = blend_fingerprint(members)
    history = list(old.get("data_history", []))
    if old.get("data_fingerprint") not in (None, fp):
        history.append({"data": old.get("data"), "data_fingerprint": old["data_fingerprint"]})
    entry = {"data": _describe(members), "data_fingerprint": fp}
    if len(members) > 1:
        entry["data_members"] = [
            {"data": str(p), "weight": w, "data_fingerprint": data_fingerprint(m)}
            for w, p, m in members
        ]
    return {**entry, "data_history": history} if history else entry


# ---- failures inside the trainer ------------------------------------------------------------


def _chain(exc: BaseException):
    """The exception, its causes/contexts, and the per-rank failures torch.distributed.checkpoint
    wraps in a CheckpointException."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__]
        failures = getattr(e, "failures", None)
        if isinstance(failures, dict):
            todo += [f for f in failures.values() if isinstance(f, BaseException)]


def last_saved(save_dir: str | None) -> str:
    last = last_checkpoint(save_dir)
    return f"{save_dir}/iter_{last:07d}" if last is not None else "none saved yet"


_TIMEOUT = re.compile(r"timed out|timeout|watchdog", re.IGNORECASE)


def report_failure(
    exc: BaseException,
    *,
    save_dir: str | None,
    loading: bool,
    timeout_s: float | None,
    memory_hint: str = "",
) -> int | None:
    """Print one ``error:`` line for a fault we know and return its exit code; None otherwise.
    ``memory_hint``: what the run holds and how to hold less (for an out-of-memory error)."""
    chain = list(_chain(exc))
    last = last_saved(save_dir)
    oom = next((e for e in chain if type(e).__name__ == "OutOfMemoryError"), None)
    if oom is not None:
        asked = re.search(r"Tried to allocate ([0-9.]+ [KMG]iB)", str(oom))
        return _print(
            f"a GPU ran out of memory{f' (asking for {asked.group(1)} more)' if asked else ''}: "
            f"{memory_hint or 'lower the micro batch with ARGS=--micro-batch-size N'}. Last "
            f"checkpoint: {last}; the same command with less memory resumes from it.",
            EXIT_OUT_OF_MEMORY,
        )
    what = _disk_full(chain, save_dir)
    if what is not None:
        line = (
            f"no space left on the device writing {what}; the run "
            f"stopped. Last complete checkpoint: {last} (an unfinished one is set aside on "
            "resume). Free space and rerun the same command to resume from it."
        )
        return _print(line, EXIT_DISK_FULL)
    if loading:
        names = {type(e).__name__ for e in chain}
        if "CheckpointException" in names or any(isinstance(e, EOFError) for e in chain):
            detail = " ".join(str(exc).split())[:200]
            return _print(
                f"checkpoint {last} could not be loaded ({type(exc).__name__}: {detail}); move "
                f"it aside (mv {last} {last}.unreadable), write the previous iteration into "
                f"{save_dir}/{TRACKER} and rerun",
                EXIT_REFUSED,
            )
    if any(type(e).__name__ in _DIST_ERRORS or isinstance(e, RuntimeError) for e in chain) and any(
        _TIMEOUT.search(str(e)) for e in chain
    ):
        return _print(
            f"a collective operation timed out after {timeout_s or '?'} s (COLLECTIVE_TIMEOUT): another "
            f"rank stopped responding (hung, stopped, or its node died). Last checkpoint: {last}; "
            "rerun the same command to resume from it.",
            EXIT_COLLECTIVE_TIMEOUT,
        )
    return None


_FULL = {errno.ENOSPC, errno.EDQUOT}
# torch.save's zip writer turns a short write into "unexpected pos N vs M" (no errno survives),
# which Megatron's async file writer logs and re-raises as "Worker failure: ..." (megatron-core
# 0.19.2 dist_checkpointing/strategies/filesystem_async.py)
_SHORT_WRITE = re.compile(
    r"unexpected pos|file write failed|no space left|worker failure", re.IGNORECASE
)


def _disk_full(chain: list[BaseException], save_dir: str | None) -> str | None:
    """What could not be written for lack of space: an ENOSPC/EDQUOT error's file, or, for a
    checkpoint writer's short write, the save dir when it has less room than its last checkpoint
    took (64 MiB before the first); None if this is not a full disk."""
    for e in chain:
        if isinstance(e, OSError) and e.errno in _FULL:
            return f"{e.filename or 'a file'} ({os.strerror(e.errno)})"
    if not save_dir or not any(_SHORT_WRITE.search(str(e)) for e in chain):
        return None
    free = shutil.disk_usage(save_dir).free
    last = last_checkpoint(save_dir)
    files = Path(save_dir, f"iter_{last:07d}").rglob("*") if last is not None else []
    need = sum(f.stat().st_size for f in files if f.is_file()) or 64 << 20
    if free >= need:
        return None
    return f"a checkpoint under {save_dir} ({free >> 20} MiB free, one takes {need >> 20} MiB)"


_DIST_ERRORS = {"DistBackendError", "DistNetworkError", "DistError"}


def _print(line: str, code: int) -> int:
    print(f"error: {line}", file=sys.stderr, flush=True)
    return code
