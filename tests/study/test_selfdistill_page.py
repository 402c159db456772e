"""docs/selfdistill.md's rules (study/selfdistill.py) on hand-made numbers: each claim both ways."""

from __future__ import annotations

from study.selfdistill import claims


def nums(s_model: float, d_l: float, top: float, loss: float, last: float) -> dict:
    return {"S_model": s_model, "D_L": d_l, "lens_top": top, "val_loss": loss, "lens_L": last}


def test_claims_are_read_against_the_none_continuation():
    source = nums(0.90, 0.010, 0.10, 5.0, 0.20)
    none = nums(0.91, 0.009, 0.11, 4.9, 0.21)  # continuing alone moves every number a little
    sd = nums(0.95, 0.004, 0.15, 4.95, 0.20)  # the paper's story: smoother, top layers better
    text = "\n".join(claims(source, {"none": none, "selfdistill": sd}))
    assert "S_model rises: yes (0.91 with the REG=none continuation, 0.95 with selfdistill" in text
    assert "D_L falls: yes (0.009 with the REG=none continuation, 0.004" in text
    assert "L-3..L-1 rises: yes" in text
    assert "validation loss (the cost in final-layer quality) rises: yes (4.9" in text
    assert "final-layer accuracy on the held-out sample falls: yes (0.21" in text
    # better than the source but worse than continuing alone: the claim is not made
    worse = nums(0.905, 0.0095, 0.105, 4.85, 0.22)
    text = "\n".join(claims(source, {"none": none, "jreg": worse}))
    assert "S_model rises: no" in text and "D_L falls: no" in text and "rises: no" in text
    assert "`none`" not in text  # the reference is not an arm of its own


def test_without_a_none_continuation_the_source_is_the_reference():
    source = nums(0.90, 0.010, 0.10, 5.0, 0.20)
    text = "\n".join(claims(source, {"selfdistill": nums(0.95, 0.01, 0.1, 5.0, 0.2)}))
    assert "S_model rises: yes (0.9 with the source, 0.95 with selfdistill" in text
    assert "D_L falls: no" in text  # unchanged is not a fall


def _layer_record(folder, layer: int, acc: float, num_layers: int = 2) -> None:
    import json

    path = folder / "lm_eval" / "iter_0000010" / "layers" / str(layer) / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"results": {"heldout_lastword": {"acc,none": acc, "acc_stderr,none": 0.01}},
              "requested": ["heldout_lastword"], "layer": layer, "num_layers": num_layers,
              "iteration": 10}  # fmt: skip
    path.write_text(json.dumps(record))


def test_per_layer_scores_table_has_a_row_per_fully_scored_model(tmp_path):
    from study.selfdistill import layer_scores, layer_section

    full, partial = tmp_path / "full", tmp_path / "partial"
    for layer, acc in enumerate((0.05, 0.125, 0.25)):
        _layer_record(full, layer, acc)
    _layer_record(partial, 0, 0.5)  # layers 1 and 2 not scored yet
    assert layer_scores(full, 10) == {("heldout_lastword", "acc"): [0.05, 0.125, 0.25]}
    assert layer_scores(partial, 10) is None and layer_scores(full, 20) is None
    doc = tmp_path / "docs" / "page.md"
    text = "\n".join(layer_section({"a": (full, 10), "b": (partial, 10)}, doc))
    assert "| a | 0.05 | 0.125 | 0.25 |" in text and "| b |" not in text
    assert (tmp_path / "docs" / "page" / "layer_scores.png").is_file()
    assert layer_section({"b": (partial, 10)}, doc) == []
