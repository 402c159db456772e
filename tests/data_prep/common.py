"""Helpers for data_prep tests: a synthetic corpus with awkward text, builds, CLI runs.

The corpus is generated (seeded) rather than downloaded so most tests run offline in
seconds; it deliberately contains what breaks tokenizers and splitters: leading spaces, tabs,
CRLF, non-ASCII text, literal special-token strings, duplicates, empty and null texts.
"""

import json
import random
from pathlib import Path

from data_prep.build import BuildConfig
from data_prep.cli import main
from data_prep.split import SPLITS, split_of, thresholds

WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which "
    "but have an they you were her she there one all we their river mountain history science "
    "government language music century island bridge theory engine library garden winter summer "
    "ancient modern northern southern republic kingdom university population"
).split()
EXTRAS = [
    "  two leading spaces",
    "\tTabbed line",
    "café naïve Ελληνικά 日本語 🙂",
    "windows line\r\nending",
    "literal </s> and <s> inside",
    "numbers 1234 and 3.14159",
    "    indented verse",
]
VOCAB = 512


def make_docs(n: int, seed: int = 0) -> list[str | None]:
    """n documents; a few are empty/None (skipped by the pipeline) and one is duplicated."""
    rng = random.Random(seed)
    docs: list[str | None] = []
    for i in range(n):
        paras = []
        for _ in range(rng.randint(1, 4)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(8, 60))]
            words[0] = words[0].capitalize()
            paras.append(" ".join(words) + rng.choice([".", "!", "?", ";"]))
        if i % 3 == 0:
            paras.insert(rng.randint(0, len(paras)), EXTRAS[i % len(EXTRAS)])
        docs.append("\n\n".join(paras) if i % 5 else "\n".join(paras))
    docs[7], docs[8], docs[9] = "", "   \n", None
    docs[20] = docs[10]
    return docs


def write_jsonl(path: Path, docs: list[str | None], field: str = "text") -> Path:
    with path.open("w", encoding="utf-8") as f:
        for i, d in enumerate(docs):
            f.write(json.dumps({"id": i, field: d}, ensure_ascii=False) + "\n")
    return path


def expected_splits(docs: list[str | None], fractions=(0.98, 0.01, 0.01)) -> dict[str, list[str]]:
    """Documents per split, in order, as the pipeline must write them."""
    cuts = thresholds(fractions)
    out = {s: [] for s in SPLITS}
    for d in docs:
        if d is not None and d.strip():
            out[SPLITS[split_of(d.encode(), cuts)]].append(d)
    return out


SPLIT = (0.8, 0.1, 0.1)
"""Larger held-out fractions than the default so a 600-doc corpus has ~60 docs per split."""


def build_config(corpus_path: Path, out_root: Path, **kw) -> BuildConfig:
    defaults = dict(
        corpus=[str(corpus_path)],
        name="syn",
        out_root=out_root,
        vocab_size=VOCAB,
        split=SPLIT,
        workers=2,
        shard_mb=0.05,
        progress=False,
    )
    return BuildConfig(**{**defaults, **kw})


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    """Run `python -m data_prep` in-process; returns (exit code, stderr)."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def dataset_bytes(root: Path) -> dict[str, bytes]:
    """The files that must be identical between equivalent builds."""
    names = [f"{s}_text_document{e}" for s in SPLITS for e in (".bin", ".idx")]
    return {
        n: (root / n).read_bytes()
        for n in [*names, "tokenizer/tokenizer.json", "tokenizer/tokenizer.model"]
        if (root / n).exists()
    }


REPO_ROOT = Path(__file__).resolve().parents[2]
