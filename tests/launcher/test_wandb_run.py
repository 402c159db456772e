"""One W&B run per training run: the launcher's id is stable, and two starts of Megatron's own W&B
setup (``global_vars._set_wandb_writer``, offline) write into one W&B run id. On the code before
this test Megatron got no id and each start opened a new run."""

from __future__ import annotations

import os
import sys

from launcher import wandb_run
from tests.helpers import run_checked

# Megatron's W&B setup with the flags the launcher gives it, twice (two starts of the run; one
# process to pay the Megatron import once; the W&B global is reset as a new process would have it).
START = """
import sys, types
from megatron.training import global_vars
flags = dict(zip(sys.argv[1::2], sys.argv[2::2]))
args = types.SimpleNamespace(rank=0, world_size=1, save=None, wandb_project=flags["--wandb-project"],
    wandb_exp_name=flags["--wandb-exp-name"], wandb_save_dir=flags["--wandb-save-dir"],
    wandb_entity=flags.get("--wandb-entity", ""))
for start in range(2):
    global_vars._GLOBAL_WANDB_WRITER = None
    global_vars._set_wandb_writer(args)
    run = global_vars.get_wandb_writer().run
    run.log({"lm_loss": 1.0 + start})
    print("wandb run", run.id, run.project, run.dir)
    global_vars.get_wandb_writer().finish()
# W&B off (no --wandb-project: the launcher's flags are empty): Megatron must not import wandb
sys.modules["wandb"] = None
global_vars._GLOBAL_WANDB_WRITER = None
global_vars._set_wandb_writer(types.SimpleNamespace(**{**vars(args), "wandb_project": ""}))
print("off", global_vars.get_wandb_writer())
"""


def test_run_id_is_made_once_and_flags_follow_the_environment(tmp_path):
    first = wandb_run.run_id(tmp_path / "a")
    assert wandb_run.run_id(tmp_path / "a") == first and len(first) == 8
    assert wandb_run.run_id(tmp_path / "b", wanted="myrun-1") == "myrun-1"
    assert wandb_run.run_id(tmp_path / "b", wanted="other") == "myrun-1"  # the stored one wins
    env = {"WANDB_PROJECT": "p", "WANDB_ENTITY": "lab"}
    flags = wandb_run.flags(tmp_path / "a", env)
    assert flags[:2] == ["--wandb-project", "p"] and flags[-2:] == ["--wandb-entity", "lab"]
    assert wandb_run.flags(tmp_path / "a", {})[:2] == ["--wandb-project", "jreg"]
    assert wandb_run.environment(tmp_path / "a", {}) == {
        "WANDB_RUN_ID": first, "WANDB_RESUME": "allow"}  # fmt: skip


def test_no_wandb_flags_when_disabled_or_not_installed(tmp_path, monkeypatch):
    """Megatron imports wandb whenever --wandb-project is given (an H200 image without the
    package died there): W&B off means no flag, and the launcher says why."""
    assert wandb_run.off_reason({}) is None
    assert wandb_run.flags(tmp_path, {"WANDB_MODE": "disabled"}) == []
    monkeypatch.setattr(wandb_run, "installed", lambda: False)
    assert wandb_run.flags(tmp_path, {"WANDB_MODE": "offline"}) == []
    assert "not installed" in wandb_run.off_reason({})


def test_two_starts_write_into_one_wandb_run(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    base = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    base.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_PROJECT="proj")
    env = {**base, **wandb_run.environment(run_dir, base)}  # as the launcher builds it
    cmd = [sys.executable, "-c", START, *wandb_run.flags(run_dir, base)]
    code, out = run_checked(cmd, 120, **env)
    assert code == 0, out[-3000:]
    seen = [x.split()[2:4] for x in out.splitlines() if x.startswith("wandb run")]
    stored = (run_dir / "wandb" / "run_id").read_text().strip()
    assert seen == [[stored, "proj"], [stored, "proj"]]
    assert "off None" in out  # no flag: Megatron's setup returned without importing wandb
    # two starts in one second get folders <time>-<id> and <time>-<id>-1: the run file names the id
    offline = sorted((run_dir / "wandb" / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all((p / f"run-{stored}.wandb").is_file() for p in offline)
