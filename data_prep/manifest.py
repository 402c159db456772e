"""manifest.json: what training, eval and people read to know what a dataset is.

Training only needs `splits` (prefixes and counts) and `tokenizer` (directory, ids); the rest
records provenance: sources with licences and sizes, the split rule, the exact command, and
the fingerprint that decides whether a later `make data` is a no-op.
"""

from datetime import UTC, datetime

import numpy as np

from data_prep import FORMAT_VERSION
from data_prep.corpus import CorpusSpec, Shard, Source
from data_prep.split import SPLITS


def heldout_samples(markers: list[list[dict]], limit: int = 256) -> list[tuple[str, int, str]]:
    """(split, global doc index, text) of held-out docs stashed by workers, evenly thinned."""
    offsets = dict.fromkeys(SPLITS, 0)
    samples = []
    for pieces in markers:
        for p in pieces:
            samples += [
                (h["split"], offsets[h["split"]] + h["doc"], h["text"]) for h in p["heldout"]
            ]
            for name in SPLITS:
                offsets[name] += p["splits"][name]["num_docs"]
    step = max(len(samples) // limit, 1)
    return samples[::step][:limit]


def _source_stats(sources: list, shards: list[Shard], markers: list[list[dict]]) -> list[dict]:
    stats = [{"num_docs": 0, "bytes": 0} for _ in sources]
    for shard, pieces in zip(shards, markers, strict=True):
        for p in pieces:
            stats[shard.source]["num_docs"] += sum(v["num_docs"] for v in p["splits"].values())
            stats[shard.source]["bytes"] += sum(v["num_bytes"] for v in p["splits"].values())
    return [
        {
            "name": s.name,
            "licence": s.licence,
            **st,
            **{k: v for k, v in s.info.items() if k not in ("name", "licence", "num_docs")},
        }
        for s, st in zip(sources, stats, strict=True)
    ]


def make_manifest(
    *,
    name: str,
    created_by: str,
    specs: list[CorpusSpec],
    text_field: str,
    sources: list[Source],
    shards: list[Shard],
    markers: list[list[dict]],
    splits: dict,
    split_fractions: tuple[float, float, float],
    tokenizer: dict,
    dtype: np.dtype,
    fingerprint: dict,
    build_info: dict,
) -> dict:
    """Assemble the manifest from the merged split counts and the shard piece markers."""
    for split in SPLITS:
        splits[split]["num_bytes"] = sum(
            p["splits"][split]["num_bytes"] for m in markers for p in m
        )
    return {
        "format_version": FORMAT_VERSION,
        "name": name,
        "created_by": created_by,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "corpus": [s.text for s in specs],
        "text_field": text_field,
        "sources": _source_stats(sources, shards, markers),
        "splits": splits,
        "split_rule": {
            "method": "blake2b-64 of the document's UTF-8 text",
            "fractions": list(split_fractions),
        },
        "tokenizer": tokenizer,
        "dtype": dtype.name,
        "eod_appended": True,
        "bos_prepended": False,
        "num_records": sum(p["records"] for m in markers for p in m),
        "num_skipped_empty": sum(p["skipped"] for m in markers for p in m),
        "fingerprint": fingerprint,
        "build": build_info,
    }
