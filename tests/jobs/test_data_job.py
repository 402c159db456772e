"""The data-prep job (jobs/data.sh, PBS or Slurm, one node): DRY_RUN prints the one command, the
job runs `make data`'s settings through `python -m data_prep make` with all the node's cores, and
bad settings are one line."""

from __future__ import annotations

import json
import os
import shlex

import pytest

from tests.jobs.common import JOBS, clean_env, run

SCRIPT = JOBS / "data.sh"


def _env(tmp_path, scheduler: str, **extra):
    ids = {"pbs": {"PBS_JOBID": "777.pbs1"}, "slurm": {"SLURM_JOB_ID": "778"}}[scheduler]
    return clean_env(tmp_path, **ids, **{k: str(v) for k, v in extra.items()})


def _command(stdout: str) -> list[str]:
    (line,) = [x for x in stdout.splitlines() if x.startswith("data job ")]
    return shlex.split(line.split("): ", 1)[1])


@pytest.mark.parametrize("scheduler", ["pbs", "slurm"])
def test_dry_run_prints_the_command_with_all_cores(tmp_path, scheduler):
    env = _env(tmp_path, scheduler, DRY_RUN=1, CORPUS="/x/*.jsonl.gz", NAME="ja",
               TEXT_FIELD="title,text", OUT_ROOT=tmp_path / "out")  # fmt: skip
    proc = run([SCRIPT], env)
    assert proc.returncode == 0, proc.stderr
    words = _command(proc.stdout)
    assert words[1:4] == ["-m", "data_prep", "make"]
    assert words[4:] == ["CORPUS=/x/*.jsonl.gz", "NAME=ja", "TEXT_FIELD=title,text",
                         f"OUT_ROOT={tmp_path / 'out'}", f"WORKERS={os.cpu_count()}"]  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_the_job_builds_the_dataset_and_logs_it(tmp_path, smoke_data):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(
        "".join(json.dumps({"text": f"document {i} " * 20}) + "\n" for i in range(30))
    )
    env = _env(tmp_path, "slurm", CORPUS=corpus, NAME="c", TOKENIZER=smoke_data / "tokenizer",
               SPLIT="8,1,1", OUT_ROOT=tmp_path / "out", WORKERS=1)  # fmt: skip
    proc = run([SCRIPT], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((tmp_path / "out" / "c" / "manifest.json").read_text())
    assert manifest["split_rule"]["fractions"] == [8, 1, 1]
    assert all(s["num_docs"] >= 1 for s in manifest["splits"].values())
    assert "wrote" in (tmp_path / "out" / "logs" / "778.log").read_text()
    env["CORPUS"] = str(tmp_path / "missing.jsonl")
    proc = run([SCRIPT], {**env, "NAME": "m"})
    assert proc.returncode == 2
    assert proc.stdout.strip().splitlines()[-1] == f"error: corpus file not found: {env['CORPUS']}"
