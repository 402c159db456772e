import os
import sys
import sysconfig
from pathlib import Path

import pytest

# Megatron processes recompile ~3,500 modules per start when this is set (as on CI machines).
os.environ["PYTHONDONTWRITEBYTECODE"] = ""
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def smoke_data(tmp_path_factory) -> Path:
    """A small prepared dataset (real text: the Python standard library's sources, 1k vocab)."""
    from tests.helpers import run_checked

    corpus = tmp_path_factory.mktemp("smoke_corpus")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.glob("*.py"))[:120]:
        (corpus / f"{path.stem}.txt").write_text(path.read_text(encoding="utf-8", errors="replace"))
    out = tmp_path_factory.mktemp("smoke_data")
    cmd = [sys.executable, "-m", "data_prep", "build", "--corpus", str(corpus / "*.txt"),
           "--name", "smoke", "--out-root", str(out), "--vocab-size", "1024",
           "--split", "0.9,0.05,0.05", "--workers", "2", "--no-progress"]  # fmt: skip
    code, log = run_checked(cmd, timeout=300)
    assert code == 0, log
    return out / "smoke"
