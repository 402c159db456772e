"""What the report needs from the run folders' files (``command.txt``, ``metrics.jsonl``,
``analysis.jsonl``, ``lm_eval/iter_*/results.json``, ``study_log.jsonl``); no model is loaded.

Numbers "at the last checkpoint" are the last ``analysis.jsonl`` line: held-out metrics on the
analysis sample, and the validation loss of the validation pass training ran after that
checkpoint, replayed by the analysis (``valid.lm_loss``), so a run stopped before its final
validation line still has one. Runs without analysis fall back to ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path

from common.datablend import format_data, parse_data
from common.files import REPO, read_jsonl
from eval.rundir import ANALYSIS_FILE
from eval.taskdata import RENAMED
from megatron_ext.metrics import jump_rate
from megatron_ext.runconfig import parse_flags
from study.reading import tail_share
from study.settings import LOG_FILE, RunSpec, StudySettings


def zeta(line: dict) -> float:
    return line["zeta_L"] if "zeta_L" in line else jump_rate(line["D"])


def scores(run_dir: Path, iteration: int | None) -> dict[str, float]:
    """``task metric`` -> value of the lm-eval results at ``iteration``."""
    path = run_dir / "lm_eval" / f"iter_{iteration or 0:07d}" / "results.json"
    if not path.is_file():
        return {}
    out = {}
    for task, metrics in json.loads(path.read_text()).get("results", {}).items():
        task = RENAMED.get(task, task)  # results written before the local tasks were renamed
        for key, value in metrics.items():
            name = key.split(",")[0]
            if "stderr" in name or name in ("alias", "sample_len"):
                continue
            if isinstance(value, (int, float)):
                out[f"{task} {name}"] = float(value)
    return out


def last_valid(metrics: list[dict]) -> dict | None:
    valid = [x for x in metrics if x.get("split") == "valid"]
    return max(valid, key=lambda x: (x["iteration"], x.get("eval_pass", 0))) if valid else None


def rel(path: Path | str) -> str:
    """A path as the report writes it: relative to the repository (no machine's folders)."""
    return os.path.relpath(path, REPO)


def rel_data(data: str) -> str:
    """``DATA`` with its folders relative to the repository."""
    members = [replace(m, path=Path(rel(m.path))) for m in parse_data(data, REPO)]
    return format_data(members)


def final_numbers(analysis: list[dict], metrics: list[dict]) -> dict:
    """The per-run table's numbers at the last checkpoint (None where not measured)."""
    out: dict = {"iteration": None, "tokens": None, "val_loss": None, "D": None}
    if analysis:
        x = analysis[-1]
        lens, L = x["lens"]["acc"], len(x["D"])
        out.update(iteration=x["iteration"], tokens=x["tokens_seen"], D=x["D"],
                   zeta_L=zeta(x), jump_ratio=x["jump_ratio"], S_model=x["S_model"],
                   heldout_loss=x["lm_loss"], lens_mid=lens[L // 2], lens_last=lens[L],
                   lens_loss_mid=x["lens"].get("loss", [None] * (L + 1))[L // 2],
                   active=x["voids"]["active_fraction"],
                   max_act=max(t[0] for t in x["massive"]["top"]) if "massive" in x else None,
                   val_loss=x.get("valid", {}).get("lm_loss"))  # fmt: skip
    valid = last_valid(metrics)
    if valid and (out["val_loss"] is None or valid["iteration"] > (out["iteration"] or 0)):
        out["val_loss"], out["val_iteration"] = valid["lm_loss"], valid["iteration"]
    if out["D"] is None and valid:
        out.update(iteration=valid["iteration"], tokens=valid.get("tokens"), D=valid["D"],
                   zeta_L=zeta(valid), jump_ratio=valid["jump_ratio"],
                   S_model=valid["S_model"])  # fmt: skip
    out["tail_share"] = tail_share(out["D"])
    loss = out["val_loss"]
    out["val_ppl"] = math.exp(loss) if loss is not None and loss < 700 else None
    return out


def train_seconds(root: Path) -> dict[str, float]:
    """Wall seconds of the finished ``train`` stages per run (all resumes together)."""
    out: dict[str, float] = {}
    for line in read_jsonl(root / LOG_FILE):
        if line.get("stage") == "train":
            out[line["run"]] = out.get(line["run"], 0.0) + line["seconds"]
    return out


def machines(root: Path) -> list[dict]:
    """Distinct machines of the study's stages, in order of first use."""
    seen = []
    for line in read_jsonl(root / LOG_FILE):
        if line.get("machine") and line["machine"] not in seen:
            seen.append(line["machine"])
    return seen


def collect_run(s: StudySettings, spec: RunSpec, seconds: dict[str, float]) -> dict:
    run_dir = s.root / spec.name
    analysis = sorted(read_jsonl(run_dir / ANALYSIS_FILE), key=lambda x: x["iteration"])
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    if s.at is not None:  # AT: every run as it was at that iteration
        analysis = [x for x in analysis if x["iteration"] <= s.at]
        metrics = [x for x in metrics if x["iteration"] <= s.at]
    final = final_numbers(analysis, metrics)
    planned = str(s.at) if s.at is not None else setup(run_dir).get("train_iters", "-")
    # a run still training (or stopped) is shown but left out of the seed statistics
    finished = not planned.isdigit() or final["iteration"] == int(planned)
    return {"name": spec.name, "group": spec.group, "main": spec.main, "seed": spec.seed,
            "dir": run_dir, "exists": (run_dir / "command.txt").is_file(), "finished": finished,
            "analysis": analysis, "metrics": metrics, "final": final,
            "scores": scores(run_dir, final["iteration"]),
            "seconds": seconds.get(spec.name)}  # fmt: skip


def setup(run_dir: Path) -> dict:
    """Recipe facts from a run's ``command.txt`` (the flags it really ran with; a partial one,
    e.g. hand-written, gives ``-`` for what it lacks)."""
    path = run_dir / "command.txt"
    if not path.is_file():
        return {}
    flags = parse_flags(path.read_text())

    def one(name: str, default: str = "-") -> str:
        values = flags.get(name)
        return values[-1] if values else default

    out = {k: one(f"--{k.replace('_', '-')}") for k in (
        "num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups",
        "seq_length", "train_iters", "global_batch_size", "micro_batch_size", "lr", "min_lr",
        "save_interval", "eval_interval", "eval_iters", "seed", "train_data_path", "jreg_reg",
        "jreg_lambda", "jreg_weights")}  # fmt: skip
    try:
        out["tokens"] = (
            int(out["train_iters"]) * int(out["global_batch_size"]) * int(out["seq_length"])
        )
    except ValueError:
        out["tokens"] = None
    paths = flags.get("--train-data-path", [])
    pairs = list(zip(paths[::2], paths[1::2], strict=False)) if len(paths) > 1 else [
        ("1", p) for p in paths]  # fmt: skip
    pairs = [(w, rel(p)) for w, p in pairs]
    out["train_data_path"] = " + ".join(f"{w} {p}" if len(pairs) > 1 else p for w, p in pairs)
    described = []
    for weight, prefix in pairs:
        manifest = REPO / Path(prefix).parent / "manifest.json"
        if not manifest.is_file():
            break
        m = json.loads(manifest.read_text())
        described.append((f"weight {weight}: " if len(pairs) > 1 else "")
                         + f"{m.get('name')} ({rel(manifest.parent)}): "
                         f"{m['splits']['train']['num_tokens']:,} training tokens, "
                         f"{m['tokenizer']['vocab_size']}-token tokenizer")  # fmt: skip
    if pairs and len(described) == len(pairs):
        out["data"] = ("a blend of " if len(pairs) > 1 else "") + "; ".join(described)
    return out


def pilot_dirs(paths: list[Path]) -> list[Path]:
    """Each path is a run dir (has ``metrics.jsonl``) or a folder of run dirs."""
    out = []
    for path in paths:
        if (path / "metrics.jsonl").is_file():
            out.append(path)
        else:
            out += sorted(p for p in path.iterdir() if (p / "metrics.jsonl").is_file())
    return out


def valid_in_training(metrics: list[dict]) -> list[dict]:
    """Validation passes training ran (not the ones after training)."""
    return [x for x in metrics if x.get("split") == "valid" and not x.get("after_training")]


def last_valid_iteration(run_dir: Path) -> int | None:
    valid = valid_in_training(read_jsonl(run_dir / "metrics.jsonl"))
    return max(x["iteration"] for x in valid) if valid else None


def analysed_iterations(run_dir: Path) -> list[int]:
    """Checkpoints ``make analyze`` measured with their validation pass replayed."""
    return sorted(x["iteration"] for x in read_jsonl(run_dir / ANALYSIS_FILE) if "valid" in x)


def pilot(run_dir: Path, at: int | None = None, analysed: bool = False) -> dict:
    """A pilot's numbers at iteration ``at`` (pilots of one group are compared at one iteration):
    with ``analysed``, its ``make analyze`` line there (validation loss replayed, D on held-out
    sequences); else its first validation pass there; else the last analysed checkpoint, the last
    validation line or the last training line (``source`` says which)."""
    analysis = sorted(read_jsonl(run_dir / ANALYSIS_FILE), key=lambda x: x["iteration"])
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    train = [x for x in metrics if x.get("split", "train") == "train"]
    valid = last_valid(metrics)
    at_iter = [x for x in valid_in_training(metrics) if x["iteration"] == at]
    at_analysis = [x for x in analysis if x["iteration"] == at and "valid" in x]
    if analysed and at_analysis:
        line, source = at_analysis[-1], "analysis (held-out D, replayed validation loss)"
        valid = line["valid"]
        train = [x for x in train if x["iteration"] <= at]
    elif at_iter:
        valid = min(at_iter, key=lambda x: x.get("eval_pass", 0))
        line, source = valid, "validation pass"
        train = [x for x in train if x["iteration"] <= at]
    elif analysis:
        line, source = analysis[-1], "analysis (held-out)"
    elif valid:
        line, source = valid, "last validation pass"
    elif train:
        line, source = train[-1], "last training log line"
    else:
        return {"name": run_dir.name, "dir": run_dir, "D": None}
    info = setup(run_dir)
    planned = info.get("train_iters", "-")
    reg = info.get("jreg_reg", "-")
    if reg not in ("none", "-"):
        reg = f"{reg} {info.get('jreg_lambda', '-')} {info.get('jreg_weights', '-')}"
    return {"name": run_dir.name, "dir": run_dir, "D": line["D"], "zeta_L": zeta(line),
            "source": source, "iteration": line["iteration"], "planned": planned,
            "tokens": train[-1]["tokens"] if train else None, "reg": reg,
            "jump_ratio": line.get("jump_ratio"),
            "val_loss": valid["lm_loss"] if valid else None,
            "shape": f"{info.get('num_layers', '-')} x {info.get('hidden_size', '-')}"}  # fmt: skip
