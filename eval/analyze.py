"""``make analyze``: jump metrics and the logit lens of every checkpoint of a run.

For each selected checkpoint, writes ``<out>/analysis/iter_<N>.jsonl`` with one line per sample
set:

* ``heldout``: the first ``SAMPLES`` sequences of the run's ``SPLIT`` split (default ``test``),
  drawn by Megatron's GPTDataset with the run's seed: the same sequences for every checkpoint and
  every run on the same data, so profiles compare across training;
* ``valid``: the validation batches that training evaluated right after this iteration (pass
  ``iteration / eval_interval``, or the final pass), when there was one; the line then carries
  the ``metrics.jsonl`` validation line of that iteration under ``logged`` and the largest
  relative difference from it (LM loss, D_l, jump ratio, S_model, jreg_loss) under
  ``max_rel_diff_vs_logged``. ``VALID=E`` evaluates pass E instead, ``VALID=off`` skips it.

Each line: ``iteration``, ``sample``, ``lm_loss``, ``D`` (per-layer mean Psi), ``jump_ratio``,
``S_model``, ``jreg_loss``, ``rel_l2``, ``hidden_norm`` (h_0..h_L) and ``lens`` (per h_l: ``loss``,
``acc``, ``kl_to_final``, ``agree_with_final``). ``analysis/summary.csv`` lists the scalars.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from eval.rundir import EvalError, RunDir
from megatron_ext.jreg import parse_schedule
from megatron_ext.reg import JregConfig

_COMPARED = ("lm_loss", "jump_ratio", "S_model", "jreg_loss")
# megatron_ext's run logger flushes every evaluation after the last training step into one line:
# the in-loop pass (when train_iters is a multiple of eval_interval), the final validation pass
# and Megatron's test-set pass, recorded under "valid" too. That line cannot match one pass.
POOLED_NOTE = (
    "the logged line at the last iteration averages this pass with the final validation pass and "
    "the test-set pass; only lines before the last iteration are single passes"
)


@dataclass(kw_only=True)
class AnalyzeConfig:
    """What ``make analyze`` measures."""

    iterations: list[int]
    """Checkpoints to analyse."""
    out_dir: Path
    """Root of the outputs (``analysis/`` goes under it)."""
    samples: int = 64
    """Held-out sequences per checkpoint."""
    split: str = "test"
    """Split the held-out sample is drawn from."""
    valid: str = "auto"
    """``auto`` (the pass after each checkpoint), ``off``, or a pass number."""
    device: str = ""
    """``cpu`` or ``cuda`` (default: cuda when available)."""

    def __post_init__(self):
        if self.samples < 1:
            raise EvalError(f"SAMPLES must be a positive integer, got {self.samples}")
        if self.split not in ("train", "valid", "test"):
            raise EvalError(f"SPLIT must be train, valid or test, got {self.split!r}")
        if self.valid not in ("auto", "off") and not (self.valid.isdigit() and int(self.valid)):
            raise EvalError(f"VALID must be auto, off or a pass number >= 1, got {self.valid!r}")


def _rel_diff(ours: float, logged: float) -> float:
    if ours == logged:
        return 0.0
    return abs(ours - logged) / max(abs(logged), 1e-12)


def compare(result: dict, logged: dict) -> float:
    """Largest relative difference between our line and a ``metrics.jsonl`` line."""
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


def measure(run: RunDir, model, ds, indices: range, dev) -> dict:
    """The probe's summary over ``ds[indices]`` in the run's microbatches."""
    from eval import megatron_io
    from eval.probe import Probe

    probe = Probe(run.model.num_layers, _weights(run), run.reg)
    for batch in megatron_io.batches(ds, indices, run.schedule.micro_batch_size, dev):
        probe.add(model, batch)
    return probe.summary()


def _valid_pass(run: RunDir, cfg: AnalyzeConfig, iteration: int) -> int | None:
    if cfg.valid == "off":
        return None
    if cfg.valid == "auto":
        return run.schedule.pass_at(iteration)
    return int(cfg.valid)


def analyze(run: RunDir, cfg: AnalyzeConfig, print_fn=print) -> list[Path]:
    """Analyse ``cfg.iterations``; returns the files written."""
    from eval import megatron_io  # patches torch for CPU (cpu_compat): imported only to run

    megatron_io.init(run.schedule.seed)
    dev = megatron_io.device(cfg.device)
    sched = run.schedule
    for it in cfg.iterations:  # validate every pass before spending time on any checkpoint
        valid_pass = _valid_pass(run, cfg, it)
        if valid_pass is not None:
            sched.pass_samples(valid_pass)
    heldout = megatron_io.dataset(run, cfg.split, cfg.samples)
    valid_ds = None
    out = cfg.out_dir / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for it in cfg.iterations:
        start = time.perf_counter()
        model = megatron_io.load_checkpoint(run, it, dtype=torch.float32).to(dev)
        lines = [{"iteration": it, "sample": f"heldout:{cfg.split}:{cfg.samples}"}]
        lines[0].update(measure(run, model, heldout, range(cfg.samples), dev))
        valid_pass = _valid_pass(run, cfg, it)
        if valid_pass is not None:
            valid_ds = valid_ds or megatron_io.dataset(run, "valid", sched.valid_num_samples)
            line = {"iteration": it, "sample": f"valid:pass{valid_pass}", "valid_pass": valid_pass}
            line.update(measure(run, model, valid_ds, sched.pass_samples(valid_pass), dev))
            logged = run.logged_valid(it) if valid_pass == sched.pass_at(it) else None
            if logged is not None:
                line["logged"] = {k: logged[k] for k in ("lm_loss", "D", *_COMPARED[1:])}
                line["max_rel_diff_vs_logged"] = compare(line, logged)
                if it >= sched.train_iters:
                    line["logged_note"] = POOLED_NOTE
            lines.append(line)
        path = out / f"iter_{it:07d}.jsonl"
        path.write_text("".join(json.dumps(x) + "\n" for x in lines))
        written.append(path)
        for line in lines:
            print_fn(_describe(line) + f" ({time.perf_counter() - start:.1f} s)")
        del model
    _write_summary(out)
    return written


def _describe(line: dict) -> str:
    d = " ".join(f"{x:.4f}" for x in line["D"])
    text = (
        f"iter {line['iteration']} {line['sample']}: lm_loss {line['lm_loss']:.4f} | D [{d}] | "
        f"ratio {line['jump_ratio']:.3f} | S_model {line['S_model']:.3f} | lens loss "
        f"{' '.join(f'{x:.2f}' for x in line['lens']['loss'])}"
    )
    if "max_rel_diff_vs_logged" in line:
        text += f" | vs metrics.jsonl: max rel diff {line['max_rel_diff_vs_logged']:.1e}"
        text += " (pooled line, see logged_note)" if "logged_note" in line else ""
    return text


def _write_summary(analysis_dir: Path) -> None:
    """``summary.csv``: the scalar columns of every line of every ``iter_*.jsonl`` there."""
    rows = []
    for path in sorted(analysis_dir.glob("iter_*.jsonl")):
        for text in path.read_text().splitlines():
            line = json.loads(text)
            row = {k: line[k] for k in ("iteration", "sample", "lm_loss", "jump_ratio", "S_model")}
            row["jreg_loss"] = line["jreg_loss"]
            row.update({f"D_{i + 1:02d}": v for i, v in enumerate(line["D"])})
            row.update({f"lens_loss_{i:02d}": v for i, v in enumerate(line["lens"]["loss"])})
            row["max_rel_diff_vs_logged"] = line.get("max_rel_diff_vs_logged", "")
            rows.append(row)
    if not rows:
        return
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with (analysis_dir / "summary.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
