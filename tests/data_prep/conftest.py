"""Session fixtures: the synthetic corpus and one reference build of it (see common.py)."""

from pathlib import Path

import pytest

from data_prep.build import build
from tests.data_prep.common import build_config, make_docs, write_jsonl


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> tuple[Path, list[str | None]]:
    docs = make_docs(600)
    path = write_jsonl(tmp_path_factory.mktemp("corpus") / "docs.jsonl", docs)
    return path, docs


@pytest.fixture(scope="session")
def built(corpus, tmp_path_factory) -> tuple[Path, dict]:
    """One reference build of the synthetic corpus (2 workers, ~10 shards)."""
    out_root = tmp_path_factory.mktemp("built")
    manifest = build(build_config(corpus[0], out_root))
    return out_root / "syn", manifest
