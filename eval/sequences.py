"""The token sequences an analysis reads, and the token counts its frequency buckets come from.

Three sources, all yielding ``[b, s]`` batches (``tokens``, ``labels``, ``loss_mask``,
``position_ids``) of ``seq`` tokens each:

* a run (``make analyze RUN=``, and ``MODEL=`` on one of our HF exports): Megatron's own
  GPTDataset of the run's split, seed and sequence length, so both sources read the same
  sequences (built here without ``cpu_compat``: dataset building needs no patched torch);
* one of our prepared dataset folders (``manifest.json``): the test split's documents in order,
  concatenated (EOD already appended by data_prep) and cut into windows of ``seq + 1`` tokens;
  re-tokenised with the model's tokenizer when it differs from the dataset's;
* a ``.txt`` file (one document) or ``.jsonl`` file (a ``text`` field per line): tokenised with
  the model's tokenizer (EOS between documents when it has one), cut the same way.

Token counts for ``eval.depth`` buckets: the training split of the run or dataset when the ids are
the dataset's (the first ``COUNT_LIMIT`` tokens), else the tokens read for the sample.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from eval.rundir import EvalError, RunDir
from megatron_ext.config import BATCH_KEYS

_SPLITS = ("train", "valid", "test")
COUNT_LIMIT = 1 << 28
"""Tokens of a training split counted for the frequency buckets (a prefix of big splits)."""


def run_dataset(run: RunDir, split: str, num_samples: int):
    """The run's GPTDataset for ``split``, built as training builds it for ``num_samples``."""
    if split not in _SPLITS:
        raise EvalError(f"SPLIT must be one of {', '.join(_SPLITS)}, got {split!r}")
    from megatron.core.datasets.blended_megatron_dataset_builder import (
        BlendedMegatronDatasetBuilder,
    )
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
    from megatron.core.tokenizers import MegatronTokenizer

    data = run.config.data
    tokenizer = MegatronTokenizer.from_pretrained(
        tokenizer_path=str(run.tokenizer_dir), metadata_path={"library": "huggingface"}
    )
    blend = [data.split_blend(s) if s == split else None for s in _SPLITS]
    config = GPTDatasetConfig(
        random_seed=run.schedule.seed, sequence_length=run.model.seq_length,
        blend_per_split=blend, tokenizer=tokenizer, create_attention_mask=False,
        reset_position_ids=data.reset_position_ids, reset_attention_mask=False,
        eod_mask_loss=data.eod_mask_loss, path_to_cache=data.data_cache_path,
        mmap_bin_files=data.mmap_bin_files,
    )  # fmt: skip
    sizes = [num_samples if s == split else None for s in _SPLITS]
    with contextlib.redirect_stdout(io.StringIO()):
        built = BlendedMegatronDatasetBuilder(GPTDataset, sizes, lambda: True, config).build()
    return built[_SPLITS.index(split)]


def indexed_documents(prefix: str):
    """Documents of an indexed dataset (data_prep's reader: no megatron-core import, which
    costs seconds to minutes on a busy machine)."""
    from data_prep.errors import DataError
    from data_prep.indexfile import DocReader

    try:
        return DocReader(Path(prefix))
    except (DataError, OSError) as err:
        raise EvalError(f"cannot read dataset {prefix}: {err}") from None


def token_counts(prefixes: str | list[str], limit: int = COUNT_LIMIT) -> np.ndarray:
    """Counts per token id of the first ``limit`` tokens of an indexed dataset (of each, for a
    blend's members: their counts added)."""
    counts = np.zeros(0, dtype=np.int64)
    for prefix in [prefixes] if isinstance(prefixes, str) else prefixes:
        tokens = indexed_documents(prefix).tokens
        for start in range(0, min(len(tokens), limit), 1 << 24):
            part = np.bincount(np.asarray(tokens[start : min(start + (1 << 24), limit)]))
            grown = np.zeros(max(len(counts), len(part)), dtype=np.int64)
            grown[: len(counts)] += counts
            grown[: len(part)] += part
            counts = grown
    return counts


@dataclass(kw_only=True)
class Sequences:
    """A sample of token sequences and where its frequency counts come from."""

    description: str
    """What was read (recorded in the analysis line)."""
    counts: np.ndarray
    """Per token id counts for the frequency buckets."""
    freq_source: str
    """Where ``counts`` come from."""
    windows: torch.Tensor | None = None
    """``[n, seq + 1]`` token windows (text and dataset folders)."""
    dataset: object = None
    """A GPTDataset (runs); its first ``num_samples`` samples are used."""
    num_samples: int = 0
    notes: list[str] = field(default_factory=list)
    """Anything the user should know (printed and recorded)."""

    def batches(self, batch_size: int, dev: torch.device) -> Iterator[dict[str, torch.Tensor]]:
        """Batches in order, as ``[b, s]`` tensors on ``dev``."""
        for start in range(0, self.num_samples, batch_size):
            stop = min(start + batch_size, self.num_samples)
            if self.dataset is not None:
                samples = [self.dataset[i] for i in range(start, stop)]
                batch = {k: torch.stack([torch.as_tensor(s[k]) for s in samples])
                         for k in BATCH_KEYS}  # fmt: skip
            else:
                w = self.windows[start:stop]
                batch = {"tokens": w[:, :-1], "labels": w[:, 1:],
                         "loss_mask": torch.ones(w[:, 1:].shape),
                         "position_ids": torch.arange(w.shape[1] - 1).expand(len(w), -1)}  # fmt: skip
            yield {k: v.to(dev) for k, v in batch.items()}


def from_run(run: RunDir, split: str, samples: int) -> Sequences:
    """The run's held-out sample, exactly as ``make analyze RUN=`` reads it."""
    ds = run_dataset(run, split, samples)
    return Sequences(
        description=f"run {run.path} split {split}, GPTDataset seed {run.schedule.seed}",
        counts=token_counts(run.prefixes("train")),
        freq_source=" + ".join(f"{p}.bin" for p in run.prefixes("train")),
        dataset=ds, num_samples=samples,
    )  # fmt: skip


def _windows(ids: list[int], samples: int, seq: int, what: str, notes: list[str]) -> torch.Tensor:
    n = min(samples, len(ids) // (seq + 1))
    if n < 1:
        raise EvalError(f"{what} has {len(ids)} tokens, fewer than one sequence of SEQ={seq} + 1")
    if n < samples:
        notes.append(f"{what} holds only {n} sequences of {seq} + 1 tokens (SAMPLES={samples})")
    return torch.tensor(ids[: n * (seq + 1)], dtype=torch.long).reshape(n, seq + 1)


def _same_vocab(a, b) -> bool:
    return a is not None and b is not None and a.get_vocab() == b.get_vocab()


def from_dataset_dir(folder: Path, tokenizer, samples: int, seq: int) -> Sequences:
    """The test split of one of our prepared datasets (re-tokenised for another tokenizer)."""
    from transformers import AutoTokenizer

    manifest = json.loads((folder / "manifest.json").read_text())
    splits = manifest.get("splits", {})
    split = next((s for s in ("test", "valid", "train") if s in splits), None)
    if split is None:
        raise EvalError(f"{folder}/manifest.json lists no splits; rebuild it with make data")
    prefix = str(folder / splits[split]["prefix"])
    data_tok = AutoTokenizer.from_pretrained(str(folder / manifest["tokenizer"]["path"]))
    docs, notes = indexed_documents(prefix), []
    need = samples * (seq + 1)
    same = tokenizer is None or _same_vocab(tokenizer, data_tok)
    if tokenizer is None:
        notes.append("the model folder has no tokenizer: the dataset's token ids are used as-is")
    ids: list[int] = []
    for i in range(len(docs)):
        doc = docs[i].tolist()
        if not same:
            eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
            text = data_tok.decode(doc, skip_special_tokens=True)
            doc = tokenizer.encode(text, add_special_tokens=False) + eos
        ids.extend(doc)
        if len(ids) >= need:
            break
    windows = _windows(ids, samples, seq, f"{prefix} ({split} split)", notes)
    if same and "train" in splits:
        train = str(folder / splits["train"]["prefix"])
        counts, source = token_counts(train), f"{train}.bin"
    else:
        counts, source = np.bincount(windows.reshape(-1).numpy()), "the sample's own tokens"
    how = "its token ids" if same else "re-tokenised with the model's tokenizer"
    return Sequences(description=f"{prefix} ({split} split, {how})", counts=counts,
                     freq_source=source, windows=windows, num_samples=len(windows), notes=notes)  # fmt: skip


def from_text_file(path: Path, tokenizer, samples: int, seq: int) -> Sequences:
    """A ``.txt`` (one document) or ``.jsonl`` (``text`` per line) file."""
    if tokenizer is None:
        raise EvalError(f"the model has no tokenizer to read {path}; use TEXT=<our dataset dir>")
    if path.suffix == ".jsonl":
        docs = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                docs.append(json.loads(line)["text"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise EvalError(f"{path} line {n} is not JSON with a 'text' field") from None
    else:
        docs = [path.read_text(encoding="utf-8", errors="replace")]
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    ids: list[int] = []
    for doc in docs:
        ids.extend(tokenizer.encode(doc, add_special_tokens=False) + eos)
        if len(ids) >= samples * (seq + 1):
            break
    notes: list[str] = []
    windows = _windows(ids, samples, seq, str(path), notes)
    return Sequences(description=f"{path}", counts=np.bincount(np.asarray(ids)),
                     freq_source=f"{path} (tokens read)", windows=windows,
                     num_samples=len(windows), notes=notes)  # fmt: skip
