"""`build`: corpus -> tokenizer -> data/<name>/{train,valid,test}_text_document.bin/.idx.

Stages, each persisted under data/<name>/.work/ so an interrupted build resumes where it
stopped: fingerprint (config.json), shard plan (plan.json), tokenizer (tokenizer/ +
tokenizer.json), shard pieces (shards/), then the merge into Megatron files, a held-out
re-encoding check and manifest.json, which is written last and marks the output complete.
The result depends only on the fingerprint (corpus, field, split, limits, tokenizer), never
on worker count, shard size or interruptions.
"""

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_prep import FORMAT_VERSION
from data_prep.corpus import (
    CorpusSpec,
    HFRef,
    Shard,
    check_text_field,
    input_bytes,
    iter_texts,
    parse_corpus,
    plan_shards,
    resolve_sources,
)
from data_prep.encoders import EncoderSpec
from data_prep.errors import DataError
from data_prep.manifest import heldout_samples, make_manifest
from data_prep.merge import check_heldout, fill_plan, merge, split_counts
from data_prep.outdir import WORK, build_once
from data_prep.pool import run_tasks
from data_prep.shards import ShardTask, committed_pieces
from data_prep.split import SPLITS, split_of, thresholds, utf8
from data_prep.tokenizer import (
    MIN_VOCAB,
    TRAIN_RECIPE,
    prepare_existing,
    prepare_trained,
    source_identity,
    verify_export,
)
from data_prep.util import DEFAULT_CACHE_DIR, num_cores, read_json, write_json

log = logging.getLogger("data_prep")

_HELDOUT_SAMPLE = 64
"""Held-out documents used to check the exported tokenizer before tokenizing."""


@dataclass(kw_only=True)
class BuildConfig:
    """Everything `build` needs; see `python -m data_prep build --help` for the flags."""

    corpus: list[str]
    """Corpus specs: `default`, `embedded:a+b`, `fineweb-edu`, `hf:REPO[:CONFIG[:SPLIT]]`, files/globs."""
    name: str
    """Output directory name under out_root."""
    out_root: Path = Path("data")
    text_field: str = "text"
    vocab_size: int = 8192
    """Vocabulary of the trained SentencePiece model (ignored with `tokenizer`)."""
    tokenizer: Path | None = None
    """Existing tokenizer (.model, HF dir, tiktoken file); None trains one on the corpus."""
    split: tuple[float, float, float] = (0.98, 0.01, 0.01)
    workers: int = field(default_factory=num_cores)
    force: bool = False
    max_docs: int | None = None
    """Keep only the first N input records (reduced builds, tests)."""
    shard_mb: float | None = None
    """Shard size in MB of input; None picks ~4 shards per worker, 1-64 MB."""
    tokenizer_train_mb: float = 256.0
    """About this much training-split text, spread over all shards, trains the tokenizer."""
    txt_docs: str = "file"
    """For .txt inputs: one document per `file` or per `line`."""
    licence: str | None = None
    """Licence to record for local/HF sources."""
    cache_dir: Path = DEFAULT_CACHE_DIR
    created_by: str = ""
    stop_after_shards: int | None = None
    """Stop (BuildInterrupted) after this many shards: exercises resume in tests."""
    progress: bool | None = None
    """Progress bar; None shows it when stderr is a terminal."""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"bad dataset name {self.name!r}: use a plain directory name")
        if self.vocab_size < MIN_VOCAB:
            raise ValueError(
                f"VOCAB={self.vocab_size} is too small: at least {MIN_VOCAB} "
                "(256 byte-fallback pieces + special tokens + characters)"
            )
        if len(self.split) != 3 or min(self.split) < 0 or self.split[0] <= 0:
            raise ValueError(f"bad split {self.split}: three non-negative fractions, train > 0")
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        if self.max_docs is not None and self.max_docs < 1:
            raise ValueError("max_docs must be >= 1")
        if self.shard_mb is not None and self.shard_mb <= 0:
            raise ValueError("shard_mb must be > 0")
        if self.tokenizer_train_mb <= 0:
            raise ValueError("tokenizer_train_mb must be > 0")
        if self.txt_docs not in ("file", "line"):
            raise ValueError("txt_docs must be 'file' or 'line'")

    @property
    def out_dir(self) -> Path:
        return self.out_root / self.name


def fingerprint(cfg: BuildConfig, specs: list[CorpusSpec]) -> dict:
    """Everything the output depends on; equal fingerprints mean identical datasets."""
    if cfg.tokenizer is None:
        tok = {
            "train": TRAIN_RECIPE,
            "vocab_size": cfg.vocab_size,
            "train_mb": cfg.tokenizer_train_mb,
        }
    else:
        tok = {k: v for k, v in source_identity(cfg.tokenizer).items() if k != "path"}
    return {
        "format": FORMAT_VERSION,
        "corpus": [{"spec": s.text, **s.identity()} for s in specs],
        "text_field": cfg.text_field,
        "split": list(cfg.split),
        "max_docs": cfg.max_docs,
        "txt_docs": cfg.txt_docs,
        "tokenizer": tok,
    }


def _shard_from_dict(d: dict) -> Shard:
    hf = HFRef(**d["hf"]) if d.get("hf") else None
    return Shard(**{**d, "paths": tuple(d["paths"]), "hf": hf})


def _plan(cfg: BuildConfig, sources: list, work: Path) -> list[Shard]:
    path = work / "plan.json"
    if path.exists():
        return [_shard_from_dict(d) for d in read_json(path)["shards"]]
    shard_bytes = auto_shard_bytes(sources, cfg.workers, cfg.shard_mb)
    shards = plan_shards(
        sources, shard_bytes=shard_bytes, txt_docs=cfg.txt_docs, max_docs=cfg.max_docs
    )
    write_json(path, {"shard_bytes": shard_bytes, "shards": [_shard_dict(s) for s in shards]})
    return shards


def auto_shard_bytes(sources: list, workers: int, shard_mb: float | None) -> int:
    """`shard_mb`, or ~4 shards per worker (1-64 MB) so the pool stays busy to the end."""
    if shard_mb:
        return int(shard_mb * 2**20)
    total = sum(input_bytes(f) for s in sources for f in s.files)
    return int(min(max(total / (4 * workers), 2**20), 64 * 2**20))


def _shard_dict(s: Shard) -> dict:
    return {**s.__dict__, "paths": list(s.paths), "hf": s.hf.__dict__ if s.hf else None}


def _sample(
    shards: list[Shard], cfg: BuildConfig, cuts: tuple[int, int], budget: int
) -> tuple[list[str], list[str], int]:
    """Training-split texts (about `budget` bytes) and some held-out texts.

    The budget is spread over the shards (leftovers carry forward), so with several sources, or
    a sorted corpus, the tokenizer sees all of them rather than only the first.
    """
    train, heldout, used, docs = [], [], 0, 0
    for i, shard in enumerate(shards):
        allowance, taken = (budget - used) / (len(shards) - i), 0
        if allowance <= 0 and len(heldout) >= _HELDOUT_SAMPLE:
            break
        for text in iter_texts(shard, cfg.text_field):
            if text is None or not text.strip():
                continue
            docs += 1
            text, data = utf8(text)
            if split_of(data, cuts) == 0:
                if taken < allowance:
                    train.append(text)
                    taken += len(data)
            elif len(heldout) < _HELDOUT_SAMPLE and len(text) <= 20_000:
                heldout.append(text)
            if taken >= allowance and len(heldout) >= _HELDOUT_SAMPLE:
                break
        used += taken
    return train, heldout, docs


def _tokenizer(
    cfg: BuildConfig, shards: list[Shard], cuts: tuple[int, int], work: Path
) -> tuple[EncoderSpec, dict]:
    state = work / "tokenizer.json"
    if state.exists():
        saved = read_json(state)
        return EncoderSpec(**saved["encoder"]), saved["info"]
    tok_dir = work / "tokenizer"
    if tok_dir.exists():
        shutil.rmtree(tok_dir)
    budget = int(cfg.tokenizer_train_mb * 2**20) if cfg.tokenizer is None else 0
    train, heldout, docs = _sample(shards, cfg, cuts, budget)
    if docs == 0:
        raise DataError(
            f"corpus is empty: no non-empty {cfg.text_field!r} documents in {' '.join(cfg.corpus)}"
        )
    if cfg.tokenizer is None:
        if not train:
            raise DataError(
                f"no training documents: the corpus has only {docs} held-out document(s); add text"
            )
        nbytes = sum(len(t.encode()) for t in train)
        log.info(
            "training SentencePiece BPE (vocab %d) on %d documents, %.1f MB",
            cfg.vocab_size,
            len(train),
            nbytes / 2**20,
        )
        encoder, info = prepare_trained(
            train,
            vocab_size=cfg.vocab_size,
            out_dir=tok_dir,
            num_threads=cfg.workers,
            sample={
                "num_docs": len(train),
                "num_bytes": nbytes,
                "train_mb": cfg.tokenizer_train_mb,
            },
        )
    else:
        log.info("using existing tokenizer %s", cfg.tokenizer)
        encoder, info = prepare_existing(cfg.tokenizer, tok_dir)
    del train
    verify_export(encoder, info, heldout, require_roundtrip=cfg.tokenizer is None)
    info["verified_heldout_docs"] = len(heldout)
    write_json(state, {"encoder": encoder.__dict__, "info": info})
    return encoder, info


def build(cfg: BuildConfig) -> dict:
    """Build (or resume, or confirm up to date) data/<name>; returns the manifest."""
    out, work = cfg.out_dir, cfg.out_dir / WORK
    t_start = time.perf_counter()
    specs = parse_corpus(cfg.corpus, cfg.licence)
    fp = fingerprint(cfg, specs)
    return build_once(out, fp, force=cfg.force, make=lambda state: _build(
        cfg, specs, fp, work, t_start, resumed=state == "resume"))  # fmt: skip


def _build(
    cfg: BuildConfig,
    specs: list[CorpusSpec],
    fp: dict,
    work: Path,
    t_start: float,
    *,
    resumed: bool,
) -> dict:
    out = cfg.out_dir
    timings = {}
    work.mkdir(parents=True, exist_ok=True)
    write_json(work / "config.json", fp)
    if resumed:
        log.info("resuming the unfinished build in %s", out)
    t = time.perf_counter()
    sources = resolve_sources(specs, cfg.cache_dir)
    check_text_field(sources, cfg.text_field)
    shards = _plan(cfg, sources, work)
    timings["sources_s"] = time.perf_counter() - t
    cuts = thresholds(cfg.split)

    t = time.perf_counter()
    encoder, tok_info = _tokenizer(cfg, shards, cuts, work)
    timings["tokenizer_s"] = time.perf_counter() - t
    dtype = np.dtype(np.uint16 if tok_info["vocab_size"] < 65500 else np.int32)

    shard_dirs = [work / "shards" / f"s{s.index:06d}" for s in shards]
    tasks = [
        ShardTask(
            shard=s,
            shard_dir=str(d),
            text_field=cfg.text_field,
            encoder=encoder,
            cuts=cuts,
            eod_id=tok_info["eod_id"],
            dtype=dtype.name,
        )
        for s, d in zip(shards, shard_dirs, strict=True)
        if not (d / "done.json").exists()
    ]
    log.info("tokenizing %d of %d shards with %d workers", len(tasks), len(shards), cfg.workers)
    t = time.perf_counter()
    total = (
        None  # unknown text size: streamed, compressed or Arrow input
        if any(s.kind in ("hf", "jsonl-z", "arrow") for s in shards)
        else sum(_shard_bytes(s) for s in (t.shard for t in tasks))
    )
    run_tasks(
        tasks,
        workers=cfg.workers,
        total_bytes=total,
        stop_after=cfg.stop_after_shards,
        progress=cfg.progress,
    )
    timings["tokenize_s"] = time.perf_counter() - t

    markers = [committed_pieces(d) for d in shard_dirs]
    pieces = [len(m) for m in markers]
    fill = fill_plan(split_counts(shard_dirs, pieces), cfg.split)
    for name in fill:
        log.warning(
            "the %s split got no document by hash (the corpus is small for its %.1f%% share): "
            "the last training document moves there",
            name,
            100 * cfg.split[SPLITS.index(name)] / sum(cfg.split),
        )
    t = time.perf_counter()
    splits = merge(shard_dirs, pieces, out, work / "final", dtype, fill)
    timings["merge_s"] = time.perf_counter() - t
    checked = check_heldout(
        out, heldout_samples(markers), encoder, tok_info["eod_id"], roundtrip=cfg.tokenizer is None
    )

    if (out / "tokenizer").exists():
        shutil.rmtree(out / "tokenizer")
    shutil.copytree(work / "tokenizer", out / "tokenizer")
    timings["total_s"] = time.perf_counter() - t_start
    num_tokens = sum(s["num_tokens"] for s in splits.values())
    manifest = make_manifest(
        name=cfg.name,
        created_by=cfg.created_by or f"data_prep.build.build({cfg!r})",
        specs=specs,
        text_field=cfg.text_field,
        sources=sources,
        shards=shards,
        markers=markers,
        splits=splits,
        split_fractions=cfg.split,
        tokenizer={**tok_info, "checked_bin_docs": checked},
        dtype=dtype,
        fingerprint=fp,
        build_info={
            "workers": cfg.workers,
            "num_shards": len(shards),
            "resumed": resumed,
            # A resumed run tokenized only part of the corpus: no meaningful rate.
            "tokens_per_s": None if resumed else round(num_tokens / timings["tokenize_s"]),
            **{k: round(v, 2) for k, v in timings.items()},
        },
    )
    if fill:
        manifest["split_rule"]["moved_from_train"] = fill
    write_json(out / "manifest.json", manifest)
    shutil.rmtree(work / "shards", ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    rate = manifest["build"]["tokens_per_s"]
    log.info(
        "wrote %s: %s tokens (%s) in %.1fs%s",
        out,
        f"{num_tokens:,}",
        ", ".join(f"{k} {v['num_docs']:,} docs" for k, v in splits.items()),
        timings["total_s"],
        f"; tokenized at {rate / 1e6:.2f}M tokens/s" if rate else "",
    )
    return manifest


def _shard_bytes(s: Shard) -> int:
    if s.kind in ("jsonl", "txt-line"):
        return s.end - s.start
    return sum(Path(p).stat().st_size for p in s.paths)
