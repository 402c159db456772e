"""make eval's table from results files: old task names read as the new ones, a group is one row,
LIMIT samples are said so, and the notes name metrics that cannot be read (all fast, no model)."""

from __future__ import annotations

import csv
import json

from eval.scores import _plot, collect, notes, write_scores


def _write(lm_eval, folder: str, record: dict) -> None:
    (lm_eval / folder).mkdir(parents=True)
    (lm_eval / folder / "results.json").write_text(json.dumps(record))


def test_table_rows_columns_and_notes(tmp_path):
    lm_eval = tmp_path / "lm_eval"
    # written before the rename, without settings (the old format)
    _write(lm_eval, "iter_0000005", {"iteration": 5, "tokens_seen": 5120, "results": {
        "heldout_lambada": {"acc,none": 0.0, "perplexity,none": 900.0,
                            "perplexity_stderr,none": 1200.0}}})  # fmt: skip
    group = {"mmlu": {"acc,none": 0.25, "acc_stderr,none": 0.01},
             "mmlu_anatomy": {"acc,none": 0.3}, "mmlu_virology": {"acc,none": 0.2}}  # fmt: skip
    _write(lm_eval, "iter_0000010", {
        "iteration": 10, "tokens_seen": 10240, "requested": ["mmlu", "heldout_lastword"],
        "limit": 20, "num_fewshot": 5, "dtype": "float32",
        "n-samples": {"heldout_lastword": {"original": 531, "effective": 20}},
        "results": {**group, "heldout_lastword": {"acc,none": 0.0, "perplexity,none": 800.0}}})  # fmt: skip
    _write(lm_eval, "model-base", {"iteration": None, "label": "model-base", "limit": 20,
                                   "num_fewshot": 5, "dtype": "float32",
                                   "results": {"mmlu": {"acc,none": 0.4}}})  # fmt: skip
    csv_path, md_path, png_path = write_scores(lm_eval)
    rows = list(csv.reader(csv_path.open()))
    assert rows[0] == ["task", "metric", "docs", "5", "10", "model-base"]
    assert [r[:2] for r in rows[1:]] == [
        ["heldout_lastword", "acc"], ["heldout_lastword", "perplexity"], ["mmlu", "acc"]]  # fmt: skip
    assert rows[1][2] == "20 of 531" and rows[3][3:] == ["", "0.25", "0.4"]
    md = md_path.read_text()
    assert "| iter 5 (0.00512M tokens) | iter 10 (0.0102M tokens) | model-base |" in md
    assert "Scores on a sample: LIMIT=20 documents per task" in md
    assert png_path.read_bytes().startswith(b"\x89PNG")
    ranges = _plot(collect(lm_eval), tmp_path / "again.png")
    assert ranges["acc"] == (0, 1) and ranges["perplexity"][1] > 1  # fractions stay in [0, 1]
    said = "\n".join(notes(lm_eval))
    assert "heldout_lastword acc is 0.0000 at every checkpoint" in said
    assert "heldout_lastword perplexity: its standard error exceeds its value" in said
    assert "different settings (limit=None: 5; limit=20: 10, model-base)" in said
    assert "mmlu" not in said  # it moves, and its stderr is small


def test_scores_go_to_the_runs_tensorboard_and_wandb_against_tokens(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from eval.score_log import to_tensorboard, to_wandb
    from eval.scores import collect

    run = tmp_path / "run"
    for it, acc in ((5, 0.1), (10, 0.2)):
        _write(run / "lm_eval", f"iter_{it:07d}", {"iteration": it, "tokens_seen": it * 1024,
                                                   "results": {"hellaswag": {"acc,none": acc}}})  # fmt: skip
    _write(run / "lm_eval", "model-base", {"label": "model-base", "results": {"hellaswag": {
        "acc,none": 0.5}}})  # fmt: skip
    table = collect(run / "lm_eval")
    events = EventAccumulator(str(to_tensorboard(run, table)))
    events.Reload()
    scalars = events.Scalars("lm_eval/hellaswag/acc")
    assert [(s.step, round(s.value, 4)) for s in scalars] == [(5120, 0.1), (10240, 0.2)]
    assert to_wandb(run, table) is None  # a run without a stored W&B id: TensorBoard only
    (run / "wandb").mkdir()
    (run / "wandb" / "run_id").write_text("abc12345\n")
    for key in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_RUN_ID", "WANDB_RESUME"):
        monkeypatch.delenv(key, raising=False)
    assert to_wandb(run, table) == "abc12345"
    assert [p.name[-9:] for p in (run / "wandb" / "wandb").glob("offline-run-*")] == ["-abc12345"]
