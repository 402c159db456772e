"""``make analyze MODEL=``: the analysis record of any Hugging Face causal LM.

Writes one line into ``runs/hf/<model-name>/analysis.jsonl`` (or ``OUT=``) with the same
measurements as ``make analyze RUN=`` (``eval.stats``: D, zeta_L, jump ratio, S_model, rel-L2,
hidden norms, logit lens, decision depth, voids, massive activations), plus ``model``,
``source`` ("hf"), ``text`` (what was read) and ``freq_source``. ``iteration`` and ``tokens_seen``
are the checkpoint's for one of our exports (``export.json``), else 0 and null.

Token sequences (``eval.sequences``): ``TEXT=`` a dataset folder or a ``.txt``/``.jsonl`` file;
without it, one of our exports reads its run's held-out sample (the sequences ``make analyze
RUN=`` reads, in the run's microbatches, so both give the same numbers), any other model the
repository's default dataset (``data/default``). The run is only read (its files), never
imported into Megatron: this process holds no patched torch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from eval.analyze import MeasureConfig
from eval.device import resolve_device
from eval.hf_model import DTYPES
from eval.rundir import REPO, EvalError, load_run

DEFAULT_TEXT = REPO / "data" / "default"


@dataclass(kw_only=True)
class HFAnalyzeConfig(MeasureConfig):
    """What ``make analyze MODEL=`` measures."""

    model: str
    """Local HF folder or hub id."""
    text: str = ""
    """Dataset folder, ``.txt``/``.jsonl`` file, or empty (see the module docstring)."""
    out_dir: Path | None = None
    """Where ``analysis.jsonl`` goes (default ``runs/hf/<model-name>``)."""
    seq: int | None = None
    """Tokens per sequence (default: the run's for our exports, else 512)."""
    batch: int | None = None
    """Sequences per forward pass (default: the run's micro batch for our exports, else 4)."""
    dtype: str = "float32"
    """Compute dtype of the weights and activations."""

    def __post_init__(self):
        super().__post_init__()
        if self.dtype not in DTYPES:
            raise EvalError(f"DTYPE must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.text:
            path = Path(self.text).expanduser()
            if path.is_dir() and not (path / "manifest.json").is_file():
                raise EvalError(f"TEXT={self.text}: folder without manifest.json (make data)")
            if not path.is_dir() and (not path.is_file() or path.suffix not in (".txt", ".jsonl")):
                raise EvalError(
                    f"TEXT={self.text}: not a dataset folder or an existing .txt/.jsonl file"
                )


def _sequences(cfg: HFAnalyzeConfig, export: dict, tokenizer):
    """(Sequences, seq, batch, run) for the settings; a run's sample for our exports without
    TEXT (run: that run, else None)."""
    from eval import sequences

    if not cfg.text and export.get("run"):
        run = load_run(export["run"])
        if cfg.seq not in (None, run.model.seq_length):
            raise EvalError(f"SEQ={cfg.seq}: the run's held-out sample has {run.model.seq_length}")
        seqs = sequences.from_run(run, "test", cfg.samples)
        return seqs, run.model.seq_length, cfg.batch or run.schedule.micro_batch_size, run
    seq, batch = cfg.seq or 512, cfg.batch or 4
    text = Path(cfg.text).expanduser() if cfg.text else DEFAULT_TEXT
    if not cfg.text and not (text / "manifest.json").is_file():
        raise EvalError(f"no TEXT= given and {text} is not built; run make data or pass TEXT=")
    if text.is_dir():
        return sequences.from_dataset_dir(text, tokenizer, cfg.samples, seq), seq, batch, None
    return sequences.from_text_file(text, tokenizer, cfg.samples, seq), seq, batch, None


def settings(cfg: HFAnalyzeConfig, seq: int, batch: int) -> dict:
    return {"model": cfg.model, "text": cfg.text or "default", "samples": cfg.samples,
            "seq": seq, "batch": batch, "dtype": cfg.dtype, "alpha": cfg.alpha}  # fmt: skip


def analyze_model(cfg: HFAnalyzeConfig, print_fn=print) -> Path:
    """Analyse ``cfg.model`` into ``analysis.jsonl``; returns its path."""
    import torch

    from eval.analyze import _existing, _weights, _write, describe
    from eval.depth import bucket_table
    from eval.hf_model import HFAdapter, load, resolve
    from eval.rundir import ANALYSIS_FILE
    from eval.stats import Stats

    spec, name, export = resolve(cfg.model)
    out_dir = cfg.out_dir or REPO / "runs" / "hf" / name
    dev = resolve_device(cfg.device)
    start = time.perf_counter()
    model, tokenizer = load(spec, cfg.dtype, dev)
    adapter = HFAdapter(model)
    seqs, seq, batch, run = _sequences(cfg, export, tokenizer)
    for note in seqs.notes:
        print_fn(f"note: {note}")
    iteration = export.get("iteration", 0)
    path = out_dir / ANALYSIS_FILE
    run_cfg = _Settings(settings(cfg, seq, batch), cfg.force)
    lines = _existing(path, run_cfg, print_fn)
    if iteration in lines and not cfg.force:
        print_fn(f"skipping {cfg.model}: already in {path} (FORCE=1 redoes it)")
        return path
    vocab = adapter.unembed.weight.shape[0]
    # jreg_loss: the run's weights and regulariser for our exports, else uniform w_l = 1/L on Psi
    num_layers = adapter.num_layers
    weights = _weights(run) if run else torch.full((num_layers,), 1.0 / num_layers)
    stats = Stats(num_layers, weights, run.reg if run else "jreg", alpha=cfg.alpha, massive=True,
                  buckets=bucket_table(seqs.counts, vocab))  # fmt: skip
    for b in seqs.batches(batch, dev):
        if int(b["tokens"].max()) >= vocab:
            raise EvalError(f"TEXT has token id {int(b['tokens'].max())} >= the model's {vocab}")
        hidden_bsh = adapter.hidden_states(b)
        stats.add([h.float() for h in hidden_bsh], adapter.head, b["labels"], b["loss_mask"])
    line = {"iteration": iteration, "tokens_seen": _tokens_seen(export), "model": cfg.model,
            "source": "hf", "architecture": type(model).__name__, "settings": run_cfg.settings,
            "text": seqs.description, "freq_source": seqs.freq_source}  # fmt: skip
    if seqs.notes:
        line["notes"] = seqs.notes
    line.update(stats.summary())
    line["seconds"] = round(time.perf_counter() - start, 2)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines[iteration] = line
    _write(path, lines)
    print_fn(describe(line))
    return path


def _tokens_seen(export: dict) -> int | None:
    """Tokens the exported checkpoint was trained on (when its run folder is still there)."""
    try:
        return load_run(export["run"]).tokens_seen(export["iteration"]) if export else None
    except (EvalError, KeyError):
        return None


@dataclass
class _Settings:
    """What ``eval.analyze._existing`` reads (settings and FORCE)."""

    settings: dict
    force: bool
