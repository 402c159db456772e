"""make eval LAYERS=: the truncated model is exactly the logit lens; LAYERS is checked in one line;
end to end, per-layer results and the score-vs-layer table and plot."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from eval.hf_model import HFAdapter
from eval.layer_eval import parse_layers, select_layers, truncated
from eval.rundir import EvalError
from tests.eval.test_hf_models import ARCHS, LAYERS, batch, build


def test_truncated_llama_is_the_logit_lens_by_hand():
    """Layer l's logits = lm_head(final norm(output_hidden_states[l])), for l = 0, middle, L."""
    model = build("llama")
    tokens = batch()["tokens"]
    model.config.tie_last_hidden_states = False  # hidden_states[L]: layer L's output, not normed
    with torch.no_grad():
        full = model(tokens, output_hidden_states=True)
        for layer in (0, LAYERS // 2, LAYERS):
            lens = model.lm_head(model.model.norm(full.hidden_states[layer]))
            with truncated(model, layer) as cut:
                assert len(cut.model.layers) == cut.config.num_hidden_layers == layer
                logits = cut(tokens).logits
            assert torch.equal(logits, lens), (layer, (logits - lens).abs().max())
    assert len(model.model.layers) == model.config.num_hidden_layers == LAYERS  # restored
    assert torch.equal(model(tokens).logits, full.logits) and torch.equal(logits, full.logits)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_truncated_model_equals_the_adapters_lens(arch):
    """Every architecture the HF adapter reads (Gemma's scaled h_0, Gemma-2's soft-capping, tied
    heads, Qwen2/Mistral layer types, GPT-2's blocks): truncated logits = the adapter's lens."""
    model = build(arch)
    x = batch()
    adapter = HFAdapter(model)
    hidden = adapter.hidden_states(x)
    with torch.no_grad():
        for layer in range(LAYERS + 1):
            with truncated(model, layer) as cut:
                logits = cut(x["tokens"], position_ids=x["position_ids"], use_cache=False).logits
            lens = adapter.head(hidden[layer].flatten(0, 1)).view_as(logits)
            assert torch.allclose(logits, lens, rtol=0, atol=1e-5), (layer, arch)


@pytest.mark.parametrize(
    ("spec", "message"),
    [("1,x", "LAYERS must be all or a comma list of layer numbers 0..L, got 'x'"),
     ("-1", "got '-1'"), ("1.5", "got '1.5'"), ("2,,3", "got ''"),
     ("0,9", "LAYERS=0,9: the model has 4 layers (0 = embeddings .. 4), no layer 9")],
)  # fmt: skip
def test_bad_layers_are_one_line(spec, message):
    with pytest.raises(EvalError) as err:
        select_layers(spec, 4, "the model")
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_layer_lists():
    assert parse_layers("all") is None and select_layers("all", 3, "m") == [0, 1, 2, 3]
    assert select_layers(" 3, 0,3 ", 3, "m") == [0, 3]


@pytest.mark.parametrize(
    ("args", "message"),
    [(["LAYERS=top"], "error: LAYERS must be all or a comma list"),
     (["LAYERS=5"], "error: LAYERS=5: RUN="),
     (["LAYERS=0,1", "MODEL={model}"], "error: LAYERS=0,1: MODEL={model} has 0 layers")],
)  # fmt: skip
def test_bad_layers_fail_before_any_file(tmp_path, capsys, args, message):
    """Before anything is exported or loaded: the run's depth, a local MODEL folder's config."""
    from eval.cli import main
    from tests.eval.test_rundir import fake_run

    run = fake_run(tmp_path)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"num_hidden_layers": 0}))
    out = tmp_path / "out"
    args = [a.format(model=model) for a in args]
    assert main(["eval", f"RUN={run}", f"OUT={out}", *args]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(message.format(model=model))
    assert not out.exists()


@pytest.mark.slow
def test_eval_layers_writes_per_layer_results_and_table(tp_pp_run, exported, tmp_path):
    """LAYERS=0,L on an export: one lm-eval pass per layer into its folder, the table, the plot,
    and the overlay of make plots. (Layer L equals make eval on the folder: checked by hand,
    README; a second eval process here would double the test's time.)"""
    from eval.layer_scores import plot_layers
    from tests.eval.conftest import eval_ok

    out = tmp_path / "out"
    num_layers = json.loads((exported / "config.json").read_text())["num_hidden_layers"]
    settings = [f"MODEL={exported}", f"OUT={out}", "TASKS=heldout_lastword,heldout_perplexity",
                "LIMIT=2", "DOCS=10"]  # fmt: skip
    log = eval_ok("eval", *settings, f"LAYERS=0,{num_layers}")
    assert not (out / "lm_eval" / "scores.csv").exists() and "Traceback" not in log
    base = out / "lm_eval" / "iter_0000002" / "layers"
    records = {n: json.loads((base / str(n) / "results.json").read_text())
               for n in (0, num_layers)}  # fmt: skip
    for n, record in records.items():
        assert (record["layer"], record["num_layers"], record["iteration"]) == (n, num_layers, 2)
        assert "heldout_perplexity" in (base / str(n) / "table.md").read_text()
    bpb = [r["results"]["heldout_perplexity"]["bits_per_byte,none"] for r in records.values()]
    assert all(math.isfinite(b) and b > 0 for b in bpb) and bpb[0] != bpb[1]
    rows = list(csv.DictReader((out / "lm_eval" / "layers.csv").open()))
    got = {(r["target"], int(r["layer"]), r["task"], r["metric"]): float(r["value"]) for r in rows}
    assert got[("iter_0000002", 0, "heldout_perplexity", "bits_per_byte")] == bpb[0]
    assert {int(r["layer"]) for r in rows} == {0, num_layers}
    md = (out / "lm_eval" / "layers.md").read_text()
    assert f"| task | metric | docs | layer 0 | layer {num_layers} |" in md
    assert (out / "lm_eval" / "layers.png").stat().st_size > 10_000
    overlay = tmp_path / "overlay.png"
    assert plot_layers({"a": out / "lm_eval", "b": out / "lm_eval"}, overlay)
    assert overlay.stat().st_size > 10_000
