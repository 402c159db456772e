"""`bench`: pipeline tokens/s against the bare tokenizer, on a built dataset's own corpus.

The issue's performance goal is pipeline overhead <= 20% over the tokenizer's own encode
speed. Both are measured in the same process on the same documents and core count: "bare" is
the tokenizer library's batch encode of all texts already in memory (its own threads =
workers), "pipeline" is what `build` does after the tokenizer exists (read + hash-split +
encode + write shard pieces + merge through megatron-core's builder) into a scratch
directory. megatron-core is imported before timing; its one-off import cost is reported
separately, as are the single-threaded and single-worker figures.
"""

import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from data_prep.build import auto_shard_bytes
from data_prep.corpus import iter_texts, parse_corpus, plan_shards, resolve_sources
from data_prep.encoders import EncoderSpec, make_encoder
from data_prep.errors import DataError
from data_prep.merge import import_builder, merge
from data_prep.pool import run_tasks
from data_prep.shards import ShardTask
from data_prep.split import thresholds
from data_prep.util import num_cores
from data_prep.validate import validate_dataset


def _pipeline(shards, manifest: dict, encoder: EncoderSpec, workers: int) -> None:
    tok = manifest["tokenizer"]
    dtype = np.dtype(manifest["dtype"])
    cuts = thresholds(tuple(manifest["split_rule"]["fractions"]))
    with tempfile.TemporaryDirectory(prefix="data_prep_bench_") as tmp:
        root = Path(tmp)
        dirs = [root / "shards" / f"s{s.index:06d}" for s in shards]
        tasks = [
            ShardTask(
                shard=s,
                shard_dir=str(d),
                text_field=manifest["text_field"],
                encoder=encoder,
                cuts=cuts,
                eod_id=tok["eod_id"],
                dtype=dtype.name,
            )
            for s, d in zip(shards, dirs, strict=True)
        ]
        run_tasks(tasks, workers=workers, total_bytes=None, progress=False)
        pieces = [len(list(d.glob("p*.json"))) for d in dirs]
        merge(dirs, pieces, root, root / "final", dtype)


def bench(path: Path, *, repeats: int = 3, workers: int | None = None, cache_dir: Path) -> dict:
    """Measure and return {tokens/s bare and pipeline, ratio, per-repeat times} for `path`."""
    manifest = validate_dataset(path)
    if manifest.get("build", {}).get("adopted"):
        raise DataError(
            f"{path} was adopted from .bin/.idx (make data ADOPT=): no text to tokenize"
        )
    workers = workers or num_cores()
    fp = manifest["fingerprint"]
    sources = resolve_sources(parse_corpus(manifest["corpus"]), cache_dir)
    shards = plan_shards(
        sources,
        shard_bytes=auto_shard_bytes(sources, workers, None),
        txt_docs=fp["txt_docs"],
        max_docs=fp["max_docs"],
    )
    texts = [t for s in shards for t in iter_texts(s, manifest["text_field"]) if t and t.strip()]
    spec = EncoderSpec(
        kind=manifest["tokenizer"]["kind"],
        tokenizer_dir=str(Path(path) / manifest["tokenizer"]["path"]),
    )
    num_tokens = sum(
        s["num_tokens"] for s in manifest["splits"].values()
    )  # includes one EOD per doc

    t = time.perf_counter()
    import_builder()
    import_s = time.perf_counter() - t
    result = {
        "dataset": str(path),
        "tokenizer": f"{spec.kind} vocab {manifest['tokenizer']['vocab_size']}",
        "num_docs": len(texts),
        "num_bytes": sum(len(x.encode()) for x in texts),
        "num_tokens": num_tokens,
        "workers": workers,
        "repeats": repeats,
        "megatron_import_s": round(import_s, 2),
    }
    encoders = {w: make_encoder(spec, num_threads=w) for w in {workers, 1}}
    runs = {
        "bare": lambda: encoders[workers].encode_batch(texts),
        "pipeline": lambda: _pipeline(shards, manifest, spec, workers),
        "bare_1thread": lambda: encoders[1].encode_batch(texts),
        "pipeline_1worker": lambda: _pipeline(shards, manifest, spec, 1),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    result["loadavg_before"] = [round(x, 2) for x in os.getloadavg()]
    # Interleaved repeats: on a shared machine each figure sees the same background load.
    for _ in range(repeats):
        for label, fn in runs.items():
            t = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - t)
    result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    for label, ts in times.items():
        median = statistics.median(ts)
        result[label] = {
            "median_s": round(median, 3),
            "times_s": [round(x, 3) for x in ts],
            "tokens_per_s": round(num_tokens / median),
        }
    result["overhead_vs_bare"] = round(
        result["pipeline"]["median_s"] / result["bare"]["median_s"] - 1, 3
    )
    result["overhead_vs_bare_1worker"] = round(
        result["pipeline_1worker"]["median_s"] / result["bare_1thread"]["median_s"] - 1, 3
    )
    return result
