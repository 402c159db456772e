"""The researcher's path end to end ("Done means" of the data issue): three small datasets made
from a `.jsonl.gz` shard, a `save_to_disk` folder and `.bin/.idx` written by Megatron's own
IndexedDatasetBuilder (adopted), trained as a weighted blend `DATA=0.5:a,0.3:b,0.2:c` on CPU,
resumed, read back by eval; a blend whose tokenizers differ is refused with one line."""

from __future__ import annotations

import gzip
import json
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import run_checked

LAUNCH = [sys.executable, "-m", "launcher"]
SHORT = dict(LOG_INTERVAL=1, SAVE_INTERVAL=2, ARGS="--eval-iters 1 --eval-interval 2")


def _texts(start: int, n: int = 40) -> list[str]:
    """Standard-library sources (the first 120 are smoke_data's corpus too)."""
    paths = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[start : start + n]
    return [p.read_text(encoding="utf-8", errors="replace") for p in paths]


@pytest.fixture(scope="module")
def three(tmp_path_factory, smoke_data) -> dict[str, Path]:
    """gz, arrow, adopted (all with smoke_data's tokenizer) and odd (a tokenizer of its own)."""
    import datasets
    from transformers import AutoTokenizer

    from data_prep.adopt import AdoptConfig, adopt
    from data_prep.build import BuildConfig, build
    from data_prep.merge import import_builder

    root = tmp_path_factory.mktemp("three")
    tok = smoke_data / "tokenizer"
    (root / "gz").mkdir()
    lines = "".join(json.dumps({"text": t}) + "\n" for t in _texts(0))
    (root / "gz" / "part-0.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    common = dict(out_root=root / "data", split=(0.8, 0.1, 0.1), workers=1, progress=False)
    build(BuildConfig(corpus=[str(root / "gz")], name="gz", tokenizer=tok, **common))
    arrow = datasets.Dataset.from_dict({"title": ["t"] * 40, "text": _texts(40)})
    arrow.save_to_disk(str(root / "arrow_src"))
    build(BuildConfig(corpus=[str(root / "arrow_src")], name="arrow", tokenizer=tok,
                      text_field="title,text", **common))  # fmt: skip
    hf = AutoTokenizer.from_pretrained(str(tok))
    builder = import_builder()(str(root / "mega_text_document.bin"), dtype=np.int32)
    for text in _texts(80):  # as preprocess_data.py --append-eod writes them
        ids = hf(text, add_special_tokens=False)["input_ids"] + [hf.eos_token_id]
        builder.add_document(np.array(ids, dtype=np.int32), [len(ids)])
    builder.finalize(str(root / "mega_text_document.idx"))
    adopt(AdoptConfig(prefixes=[root / "mega_text_document"], tokenizer=tok, name="adopted",
                      out_root=root / "data", split=(0.8, 0.1, 0.1)))  # fmt: skip
    build(BuildConfig(corpus=[str(root / "gz")], name="odd", vocab_size=400, **common))
    return {n: root / "data" / n for n in ("gz", "arrow", "adopted", "odd")}


@pytest.mark.slow
def test_blend_trains_resumes_and_refuses_other_tokenizers(three, smoke_data, tmp_path, capsys):
    from launcher.data import Dataset, check_tokenizers

    def load(p):
        return Dataset(weight=1, path=p, manifest=json.loads((p / "manifest.json").read_text()))

    check_tokenizers([load(three[n]) for n in ("gz", "arrow", "adopted")] + [load(smoke_data)])
    arrow = json.loads((three["arrow"] / "manifest.json").read_text())
    assert arrow["text_field"] == "title,text" and arrow["splits"]["valid"]["num_docs"] >= 1
    blend = f"0.5:{three['gz']},0.3:{three['arrow']},0.2:{three['adopted']}"
    run = tmp_path / "blend"
    code, out = run_checked([*LAUNCH, f"RUN={run}", f"DATA={blend}", "ITERS=2",
                             *[f"{k}={v}" for k, v in SHORT.items()]], 600)  # fmt: skip
    assert code == 0, out[-4000:]
    assert f"data blend 0.5 {three['gz']} + 0.3 {three['arrow']} + 0.2 {three['adopted']}" in out
    cfg = json.loads((run / "run_config.json").read_text())["data"]
    assert [(m["weight"], m["path"]) for m in cfg["members"]] == [
        (0.5, str(three["gz"])), (0.3, str(three["arrow"])), (0.2, str(three["adopted"]))]  # fmt: skip
    record = json.loads((run / "launch.json").read_text())
    assert len(record["data_members"]) == 3
    # resume: two more iterations from the checkpoint at 2, the blend checked member by member
    args = SHORT["ARGS"] + " --override-opt_param-scheduler"
    code, out = run_checked([*LAUNCH, f"RUN={run}", f"DATA={blend}", "ITERS=4",
                             *[f"{k}={v}" for k, v in {**SHORT, "ARGS": args}.items()]], 600)  # fmt: skip
    assert code == 0, out[-4000:]
    iters = [json.loads(x)["iteration"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert 3 in iters and 4 in iters
    assert (run / "checkpoints" / "latest_checkpointed_iteration.txt").read_text().strip() == "4"
    # another weight is another token stream: refused on resume
    from launcher.cli import main

    other = f"0.2:{three['gz']},0.3:{three['arrow']},0.5:{three['adopted']}"
    capsys.readouterr()
    assert main([f"RUN={run}", f"DATA={other}", "ITERS=4", "DRY_RUN=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: the dataset changed under")
    assert "weights differ" in err
    # eval reads the blend: Megatron's BlendedDataset over the three valid splits
    from eval.rundir import load_run
    from eval.sequences import run_dataset

    r = load_run(str(run))
    assert len(r.prefixes("valid")) == 3
    ds = run_dataset(r, "valid", 8)
    assert type(ds).__name__ == "BlendedDataset" and len(ds) >= 8
    # a blend with another tokenizer: one line naming it
    odd = f"0.5:{three['gz']},0.5:{three['odd']}"
    assert main([f"RUN={tmp_path / 'odd'}", f"DATA={odd}", "DRY_RUN=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"error: DATA: {three['odd']} uses another tokenizer")
