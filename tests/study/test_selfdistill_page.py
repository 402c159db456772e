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
