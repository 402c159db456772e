"""``make analyze``: jump metrics, logit lens, massive activations and voids of every checkpoint.

Writes one JSON line per checkpoint into ``<out>/analysis.jsonl`` (sorted by iteration; the file
is rewritten through a temporary file after each checkpoint, so an interrupted run keeps the
checkpoints it finished). Checkpoints already in the file with the same settings are skipped
unless ``FORCE=1``; a file written with other settings is refused (``FORCE=1`` redoes the selected
checkpoints and drops lines of other settings). A line:

* ``iteration``, ``tokens_seen``, ``settings`` (``split``, ``samples``, ``alpha``, ``valid``),
  ``seconds``;
* measured on the held-out sample (the first ``SAMPLES`` sequences of the run's ``SPLIT`` split,
  drawn by Megatron's GPTDataset with the run's seed: the same sequences for every checkpoint and
  every run on the same data): ``num_sequences``, ``num_tokens``, ``lm_loss``, ``D`` (D_1..D_L,
  mean Psi), ``zeta_L``, ``jump_ratio``, ``S_model``, ``jreg_loss``, ``rel_l2``, ``hidden_norm``
  (h_0..h_L), ``lens`` (per h_0..h_L: ``acc``, ``loss``, ``ppl``, ``kl_to_final``,
  ``agree_with_final``), ``decision_depth``, ``massive`` (the massive-activations paper's
  per-sequence statistic and ours, per h_0..h_L) and ``voids`` (``alpha``, ``active_fraction``,
  ``layer_rate`` for layers 1..L), see ``eval.stats``, ``eval.depth`` and ``eval.activations``
  (``make analyze MODEL=``, ``eval.analyze_hf``, writes the same line for any HF model);
* ``valid``: the same measurements (without ``massive``) on the validation batches training
  evaluated right after this iteration (pass ``iteration / eval_interval``, or the final pass),
  with ``pass``, the ``metrics.jsonl`` line of that pass under ``logged`` and the largest relative
  difference from it (LM loss, D_l, jump ratio, S_model, jreg_loss) under
  ``max_rel_diff_vs_logged``. ``VALID=E`` evaluates pass E instead (compared when the logged pass
  ran on this iteration's model), ``VALID=off`` leaves ``valid`` out.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from common.files import atomic_write_text, read_jsonl
from eval.activations import VOID_ALPHA
from eval.device import check_device, resolve_device
from eval.rundir import ANALYSIS_FILE, EvalError, RunDir
from megatron_ext.jreg import parse_schedule
from megatron_ext.regconfig import JregConfig

_COMPARED = ("lm_loss", "jump_ratio", "S_model", "jreg_loss")


@dataclass(kw_only=True)
class MeasureConfig:
    """Settings ``make analyze RUN=`` and ``make analyze MODEL=`` (``eval.analyze_hf``) share."""

    samples: int = 64
    """Held-out sequences measured (per checkpoint)."""
    alpha: float = VOID_ALPHA
    """Void threshold scale."""
    force: bool = False
    """Redo what ``analysis.jsonl`` already holds."""
    device: str = ""
    """``cpu`` or ``cuda`` (default: cuda when available)."""

    def __post_init__(self):
        if self.samples < 1:
            raise EvalError(f"SAMPLES must be a positive integer, got {self.samples}")
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise EvalError(f"ALPHA must be a positive number, got {self.alpha}")
        check_device(self.device)


@dataclass(kw_only=True)
class AnalyzeConfig(MeasureConfig):
    """What ``make analyze`` measures."""

    iterations: list[int]
    """Checkpoints to analyse."""
    out_dir: Path
    """Where ``analysis.jsonl`` goes."""
    split: str = "test"
    """Split the held-out sample is drawn from."""
    valid: str = "auto"
    """``auto`` (the pass after each checkpoint), ``off``, or a pass number."""

    def __post_init__(self):
        super().__post_init__()
        if self.split not in ("train", "valid", "test"):
            raise EvalError(f"SPLIT must be train, valid or test, got {self.split!r}")
        if self.valid not in ("auto", "off") and not (self.valid.isdigit() and int(self.valid)):
            raise EvalError(f"VALID must be auto, off or a pass number >= 1, got {self.valid!r}")

    @property
    def settings(self) -> dict:
        """What a line's numbers depend on besides the checkpoint."""
        return {"split": self.split, "samples": self.samples, "alpha": self.alpha,
                "valid": self.valid}  # fmt: skip


def _rel_diff(ours: float, logged: float) -> float:
    if ours == logged:
        return 0.0
    return abs(ours - logged) / max(abs(logged), 1e-12)


def compare(result: dict, logged: dict) -> float:
    """Largest relative difference between our measurements and a ``metrics.jsonl`` line."""
    pairs = [(result[k], logged[k]) for k in _COMPARED if k in logged]
    pairs += list(zip(result["D"], logged["D"], strict=True))
    return max(_rel_diff(a, b) for a, b in pairs if math.isfinite(a) and math.isfinite(b))


def _weights(run: RunDir):
    name, kw = parse_schedule(run.weights)
    cfg = JregConfig(
        reg=run.reg, lam=run.lam, schedule=name, schedule_k=kw.get("k"),
        num_layers=run.model.num_layers,
    )  # fmt: skip
    return cfg.weights


def buckets(run: RunDir) -> torch.Tensor:
    """Frequency bucket per token id (``eval.depth``) from the run's training split."""
    from eval.depth import bucket_table
    from eval.sequences import token_counts

    return bucket_table(token_counts(run.prefixes("train")), run.vocab_size)


def measure(
    run: RunDir, model, ds, indices: range, dev, alpha: float, massive: bool, table: torch.Tensor
) -> dict:
    """The probe's summary over ``ds[indices]`` in the run's microbatches."""
    from eval import megatron_io
    from eval.probe import Probe

    probe = Probe(run.model.num_layers, _weights(run), run.reg, alpha, massive, table)
    for batch in megatron_io.batches(ds, indices, run.schedule.micro_batch_size, dev):
        probe.add_batch(model, batch)
    return probe.summary()


def _valid_pass(run: RunDir, cfg: AnalyzeConfig, iteration: int) -> int | None:
    if cfg.valid == "off":
        return None
    if cfg.valid == "auto":
        return run.schedule.pass_at(iteration)
    return int(cfg.valid)


def _by_iteration(path: Path) -> dict[int, dict]:
    """Lines of an ``analysis.jsonl`` by iteration (a torn last line is ignored)."""
    return {line["iteration"]: line for line in read_jsonl(path)}


def _write(path: Path, lines: dict[int, dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(lines[k]) + "\n" for k in sorted(lines)))


def _existing(path: Path, cfg: AnalyzeConfig, print_fn) -> dict[int, dict]:
    """Lines to keep; raises when the file holds other settings and FORCE is off."""
    lines = _by_iteration(path)
    other = sorted(k for k, x in lines.items() if x.get("settings") != cfg.settings)
    if other and not cfg.force:
        raise EvalError(
            f"{path} holds iterations {', '.join(map(str, other))} analysed with other settings "
            f"({lines[other[0]].get('settings')}); use FORCE=1 to redo, or OUT= another folder"
        )
    if other:
        print_fn(f"FORCE=1: dropping lines of iterations {other} (other settings)")
    return {k: x for k, x in lines.items() if k not in other}


def analyze(run: RunDir, cfg: AnalyzeConfig, print_fn=tqdm.write) -> Path:
    """Analyse ``cfg.iterations`` into ``<out_dir>/analysis.jsonl``; returns its path."""
    path = cfg.out_dir / ANALYSIS_FILE
    lines = _existing(path, cfg, print_fn)
    todo = [it for it in cfg.iterations if cfg.force or it not in lines]
    skipped = [it for it in cfg.iterations if it not in todo]
    if skipped:
        print_fn(f"skipping iterations {skipped}: already in {path} (FORCE=1 redoes them)")
    for it in todo:  # validate every pass before spending time on any checkpoint
        valid_pass = _valid_pass(run, cfg, it)
        if valid_pass is not None:
            run.schedule.pass_samples(valid_pass)
    if not todo:
        return path
    from eval import megatron_io  # patches torch for CPU (cpu_compat): imported only to run

    megatron_io.init(run.schedule.seed)
    dev = resolve_device(cfg.device)
    heldout = megatron_io.dataset(run, cfg.split, cfg.samples)
    table = buckets(run)
    valid_ds = None
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    for it in tqdm(todo, desc="analyze", unit="checkpoint"):
        start = time.perf_counter()
        model = megatron_io.load_checkpoint(run, it, dtype=torch.float32).to(dev)
        line = {"iteration": it, "tokens_seen": run.tokens_seen(it), "settings": cfg.settings}
        line.update(measure(run, model, heldout, range(cfg.samples), dev, cfg.alpha, True, table))
        valid_pass = _valid_pass(run, cfg, it)
        if valid_pass is not None:
            valid_ds = valid_ds or megatron_io.dataset(run, "valid", run.schedule.valid_num_samples)
            valid = {"pass": valid_pass}
            valid.update(
                measure(run, model, valid_ds, run.schedule.pass_samples(valid_pass), dev,
                        cfg.alpha, False, table)
            )  # fmt: skip
            logged, note = run.logged_pass(valid_pass)
            if logged is not None and logged["iteration"] == it:
                valid["logged"] = {k: logged[k] for k in ("lm_loss", "D", *_COMPARED[1:])}
                valid["max_rel_diff_vs_logged"] = compare(valid, logged)
                if note:
                    valid["logged_note"] = note
            line["valid"] = valid
        line["seconds"] = round(time.perf_counter() - start, 2)
        lines[it] = line
        _write(path, lines)
        print_fn(describe(line))
        del model
    return path


def describe(line: dict) -> str:
    """One console line per checkpoint."""
    d = " ".join(f"{x:.4f}" for x in line["D"])
    label = line.get("model") or f"iter {line['iteration']}"
    text = (
        f"{label}: lm_loss {line['lm_loss']:.4f} | D [{d}] | "
        f"ratio {line['jump_ratio']:.3f} | S_model {line['S_model']:.3f} | "
        f"zeta_L {line.get('zeta_L', math.nan):.3f} | lens acc "
        f"{' '.join(f'{x:.3f}' for x in line['lens']['acc'])} | max|a| "
        f"{max(t[0] for t in line['massive']['top']):.1f} | active layers "
        f"{line['voids']['active_fraction']:.3f}"
    )
    valid = line.get("valid", {})
    if "max_rel_diff_vs_logged" in valid:
        text += f" | pass {valid['pass']} vs metrics.jsonl: max rel diff "
        text += f"{valid['max_rel_diff_vs_logged']:.1e}"
        text += " (pooled line, see logged_note)" if "logged_note" in valid else ""
    return text + f" ({line['seconds']:.1f} s)"
