"""The study's rules and report on hand-made numbers (no training); each verdict goes both ways."""

from __future__ import annotations

import json
import math
import os
import sys

import pytest

from study.reading import final_only_moves, fmt, growth, jump_layers
from study.report import PLACEHOLDER, write_report
from study.settings import StudyError, check_run_record, parse
from tests.helpers import REPO, run_checked


def test_growth_yes_no_and_all_zero():
    assert "monotonically over checkpoints: yes; it rises from 0.001" in growth(
        "D_L", [0.001, 0.002, 0.002, 0.003], [1, 2, 3, 4]
    )
    text = growth("D_L", [0.001, 0.003, 0.002, 0.004], [10, 20, 30, 40])
    assert "no (it falls at iteration(s) 30)" in text and "rises" in text
    assert "no, it is 0 at every checkpoint" in growth("zeta_L", [0.0, 0.0], [1, 2])
    assert "not decided" in growth("D_L", [0.1], [1])


def test_jump_layers_and_final_only():
    d_none = [0.4, 0.01, 0.012, 0.011, 0.03]  # largest rise at the last layer (5)
    assert jump_layers(d_none) == {"top_rise": 5, "argmax": 5}
    moved = [0.4, 0.01, 0.012, 0.03, 0.005]  # the rise moved to layer 4 = L-1
    assert "L-1 = 4: yes" in final_only_moves(d_none, moved)
    assert "L-1 = 4: no" in final_only_moves(d_none, [0.4, 0.02, 0.012, 0.011, 0.009])
    no_jump = [0.4, 0.03, 0.02, 0.01, 0.005]
    assert jump_layers(no_jump)["top_rise"] is None
    assert "not applicable" in final_only_moves(no_jump, moved)


def line(iteration: int, d: list[float], loss: float) -> dict:
    n = len(d)
    return {"iteration": iteration, "tokens_seen": iteration * 1024, "D": d, "lm_loss": loss,
            "zeta_L": 100 * max(0.0, d[-1] - d[-2]), "jump_ratio": d[-1] / d[-2], "S_model": 0.9,
            "lens": {"acc": [0.01 * i for i in range(n + 1)]}, "voids": {"active_fraction": 0.5},
            "massive": {"top": [[5.0, 4.0, 3.0]] * (n + 1)},
            "valid": {"lm_loss": loss + 0.1}}  # fmt: skip


def fake_run(root, name: str, profiles: list[list[float]], loss: float) -> None:
    run = root / name
    run.mkdir(parents=True)
    lines = [line(10 * (i + 1), d, loss) for i, d in enumerate(profiles)]
    (run / "analysis.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (run / "metrics.jsonl").write_text(json.dumps({"iteration": 10, "tokens": 10240, "D": [0.1]})
                                       + "\n")  # fmt: skip
    (run / "command.txt").write_text(
        "python -m megatron_ext.train --num-layers 6 --num-layers 4 --hidden-size 128 "
        "--seq-length 128 --train-iters 30 --global-batch-size 8 --lr 0.003\n"
    )
    results = run / "lm_eval" / f"iter_{lines[-1]['iteration']:07d}" / "results.json"
    results.parent.mkdir(parents=True)
    scores = {"heldout_lambada": {"acc,none": 0.25, "acc_stderr,none": 0.1}}
    results.write_text(json.dumps({"results": scores}))


def test_report_from_files(tmp_path):
    root, doc = tmp_path / "runs", tmp_path / "docs" / "study.md"
    grow = [[0.4, 0.01, 0.010, 0.005], [0.4, 0.01, 0.010, 0.012], [0.4, 0.01, 0.010, 0.020]]
    fake_run(root, "none", grow, 5.0)
    jreg = [[0.4, 0.01, 0.010, 0.004], [0.4, 0.01, 0.010, 0.006], [0.4, 0.01, 0.010, 0.008]]
    fake_run(root, "jreg", jreg, 5.02)
    fake_run(root, "jreg-final", [[0.4, 0.01, 0.03, 0.004]] * 3, 5.01)
    fake_run(root, "none-seed7", grow[-1:], 5.0)
    s = parse([f"ROOT={root}", f"DOC={doc}", "SEEDS=7", f"PILOTS={root / 'none'}", "LAMBDA=0.1"])
    written = write_report(s)
    text = doc.read_text()
    assert written[0] == doc and all(p.read_bytes().startswith(b"\x89PNG") for p in written[1:])
    assert "![D_L and zeta_L over tokens seen](study/jump_over_tokens.png)" in text
    assert "4 layers x hidden 128" in text  # the last --num-layers wins, as in Megatron
    assert "D_L grows monotonically over checkpoints: yes; it rises from 0.005" in text
    assert "first at iteration: 20" in text  # D_L 0.012 > D_(L-1) 0.010 from the 2nd checkpoint
    # one pair (seed 1234): the difference is printed, no interval, so not shown
    assert ("JREG lowers D_L: not shown (one pair gives no interval; jreg (LAMBDA=0.1) - none "
            "over 1 paired seed(s) 1234: mean difference -0.012 (-60.00%)") in text  # fmt: skip
    assert "| 1234 | none | none | 5.1 | 0.02 |" in text  # per-seed rows
    assert "| 1234 | jreg | jreg | 5.12 | 0.008 |" in text
    share = 0.02 / (0.01 + 0.01 + 0.02)  # last quarter of 4 layers (layer 4) / layers 2..4
    assert f"| last-quarter share of D | 1 | {fmt(share)} |" in text
    assert "Final-only's cost in validation loss: not shown (one pair" in text
    assert str(tmp_path) not in text.replace("../", "")  # paths relative to the repository
    assert "Final-only moves the jump to layer L-1 = 3: yes" in text
    assert "| 4 | 1 | 0 | 0 |" in text  # zeta_4 of none (D rises 0.01), jreg and jreg-final
    assert "| 3 | 1 | 0 | 2 |" in text  # zeta_3: final-only's rise at layer 3 (0.02)
    assert "| none | 30 | 30720 | 5.1 | " + f"{math.exp(5.1):.5g} |" in text
    assert "heldout_lastword acc" in text and "stderr" not in text  # old results: new name
    assert PLACEHOLDER in text and "| none | 4 x 128 | 30 / 30 |" in text  # the pilot
    # none-seed7 stopped at iteration 10 of 30: shown, but not one of the seeds
    assert "| none-seed7 (unfinished) | 10 |" in text and "| 7 | none |" not in text
    # the hand-written paragraph survives a regeneration
    doc.write_text(text.replace(PLACEHOLDER, "The jump grows; JREG halves it."))
    write_report(s)
    assert "The jump grows; JREG halves it." in doc.read_text()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["LAMBDA=-1"], "LAMBDA must be a number >= 0"),
        (["SEEDS=1234"], "SEEDS must not repeat SEED=1234"),
        (["STAGES=train,bake"], "STAGES must be a comma list"),
        (["ITERS=x"], "ITERS must be an integer"),
        (["COLOUR=red"], "unknown setting 'COLOUR=red'"),
        (["PILOTS=/nowhere"], "PILOTS: /nowhere is not a folder"),
        (["DATA=0:data/a,1:data/b"], "weight '0' of '0:data/a' is not a positive number"),
    ],
)
def test_bad_settings(argv, message):
    with pytest.raises(StudyError, match=message):
        parse(argv)


def test_changed_settings_refused(tmp_path):
    s = parse([f"ROOT={tmp_path}", "LAMBDA=0.1"])
    run = s.runs()[1]
    (tmp_path / run.name).mkdir()
    (tmp_path / run.name / "study_run.json").write_text(json.dumps(run.record(s)))
    check_run_record(s, run)  # same settings: continues
    (tmp_path / "data").symlink_to(s.data)  # the same dataset through a link (another checkout)
    check_run_record(parse([f"ROOT={tmp_path}", "LAMBDA=0.1", f"DATA={tmp_path / 'data'}"]), run)
    blend = parse([f"ROOT={tmp_path}", "LAMBDA=0.1", f"DATA=3:{s.data},1:{tmp_path}/other"])
    assert blend.data == f"0.75:{s.data},0.25:{tmp_path}/other"
    (tmp_path / blend.runs()[1].name / "study_run.json").write_text(json.dumps(run.record(blend)))
    linked = f"DATA=0.75:{tmp_path / 'data'},0.25:{tmp_path}/other"
    check_run_record(parse([f"ROOT={tmp_path}", "LAMBDA=0.1", linked]), run)
    with pytest.raises(StudyError, match=r"data '0.75:.*' -> '0.5:"):
        check_run_record(parse([f"ROOT={tmp_path}", "LAMBDA=0.1", f"DATA=1:{s.data},1:{tmp_path}/other"]), run)  # fmt: skip
    with pytest.raises(StudyError, match=r"lam 0.1 -> 0.3.*ROOT= another folder"):
        check_run_record(parse([f"ROOT={tmp_path}", "LAMBDA=0.3"]), parse(
            [f"ROOT={tmp_path}", "LAMBDA=0.3"]).runs()[1])  # fmt: skip


def test_bad_setting_one_line():
    code, out = run_checked([sys.executable, "-m", "study", "LAMBDA=-1"], timeout=120)
    assert code == 2 and out.strip() == "error: LAMBDA must be a number >= 0, got -1.0", out


def test_report_describes_a_blend_runs_data(tmp_path):
    from study.collect import setup

    for name, tokens in (("ja", 1000), ("en", 500)):
        (tmp_path / name).mkdir()
        manifest = {"name": name, "splits": {"train": {"num_tokens": tokens}},
                    "tokenizer": {"vocab_size": 512}}  # fmt: skip
        (tmp_path / name / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "command.txt").write_text(
        f"python -m megatron_ext.train --train-data-path 0.7 {tmp_path}/ja/train_text_document "
        f"0.3 {tmp_path}/en/train_text_document --seq-length 8\n"
    )
    out = setup(tmp_path / "run")
    where = os.path.relpath(tmp_path, REPO)
    assert out["data"] == (
        f"a blend of weight 0.7: ja ({where}/ja): 1,000 training tokens, 512-token tokenizer; "
        f"weight 0.3: en ({where}/en): 500 training tokens, 512-token tokenizer"
    )
