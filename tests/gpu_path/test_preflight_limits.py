"""`make preflight`'s verdicts on CPU (issue 20): every rank's matmul against the median and the
datasheet peak, NVLink bus bandwidth, GPU health from nvidia-smi text, the time budget, the
attention backend from TE's log, checkpoint continuation, a pytest run as a check, and the
per-SIZE real-shape runs (stand-in launcher)."""

from __future__ import annotations

import pytest

from preflight import limits, runs
from preflight.table import Check


def test_every_rank_and_the_datasheet_decide_the_matmul():
    healthy = [760.0, 770.0, 755.0, 765.0, 770.0, 760.0, 768.0, 762.0]
    assert limits.matmul_check(healthy, "NVIDIA H200").ok
    one_slow = healthy[:7] + [600.0]  # a throttled GPU 7: rank 0 alone looked fine
    check = limits.matmul_check(one_slow, "NVIDIA H200")
    assert not check.ok and "slowest GPU 7 600" in check.value
    all_slow = [300.0] * 8  # even, positive, and far below an H200
    check = limits.matmul_check(all_slow, "NVIDIA H200")
    assert not check.ok and "30% of the H200's dense bf16 peak 989" in check.value
    assert limits.matmul_check([50.0, 50.0], "Some GPU").ok  # no datasheet: even is enough


@pytest.mark.parametrize(
    "busbw, name, ok",
    [(380.0, "NVIDIA H200", True), (45.0, "NVIDIA H200", False), (120.0, "NVIDIA H200", False),
     (60.0, "Some GPU", True), (380.0, "NVIDIA H100 80GB HBM3", True)],
)  # fmt: skip
def test_nvlink_bus_bandwidth(busbw, name, ok):
    check = limits.busbw_check(busbw, True, device_name=name, world=8)
    assert check.ok is ok, check.value
    assert not limits.busbw_check(380.0, False, device_name=name, world=8).ok
    assert limits.busbw_check(0.0, True, device_name=name, world=1).ok
    # across nodes: InfiniBand, not a TCP-socket fallback
    assert limits.internode_check(180.0, True, nodes=2, world=16).ok
    assert not limits.internode_check(3.0, True, nodes=2, world=16).ok


def test_gpu_health_from_nvidia_smi():
    good = "0, NVIDIA H200, 0\n1, NVIDIA H200, 0\n"
    remap = "00000000:18:00.0, 0, 0, 0\n00000000:2A:00.0, 1, 0, 0\n"
    assert limits.health_check(good, remap).ok
    bad_ecc = limits.health_check("0, NVIDIA H200, 0\n1, NVIDIA H200, 3\n", remap)
    assert not bad_ecc.ok and "GPU 1: 3 uncorrectable ECC errors" in bad_ecc.value
    pending = limits.health_check(good, "00000000:18:00.0, 0, 1, 0\n")
    assert not pending.ok and "pending=1" in pending.value
    assert not limits.health_check("", "").ok  # no answer is no pass


def test_time_budget():
    fine = limits.budget_checks({"node checks": 50.0, "throughput": 160.0})[0]
    assert (
        fine.ok
        and "total 210 s (target 600)" in fine.value
        and "throughput 160 s > 150" in fine.value
    )
    slow = limits.budget_checks({"node checks": 130.0})[0]
    assert not slow.ok and "over 2x: node checks" in slow.value


def test_attention_backend_from_te_log():
    log = ("[INFO | DotProductAttention]: Running with FusedAttention backend (sub-backend 1)\n"
           "[INFO | DotProductAttention]: Running with FusedAttention backend (sub-backend 1)\n")  # fmt: skip
    assert runs.attention_backend(log, te=True).ok
    fallback = (
        log + "[INFO | DotProductAttention]: Running with UnfusedDotProductAttention backend\n"
    )
    check = runs.attention_backend(fallback, te=True)
    assert not check.ok and "UnfusedDotProductAttention" in check.value
    assert not runs.attention_backend("", te=True).ok
    assert runs.attention_backend("", te=False).ok


def test_checkpoint_continuation():
    def lines(losses):
        return [{"iteration": i + 1, "lm_loss": x, "D": [0.1, 0.2]} for i, x in enumerate(losses)]

    full = lines([7.0, 6.5, 6.123456789, 5.9])
    assert runs.continuation_check(full, lines([7.0, 6.5, 6.123456789, 5.9000001]), 3).ok
    off = runs.continuation_check(full, lines([7.0, 6.5, 6.123456788, 5.9]), 3)
    assert not off.ok and "DIFFERENT" in off.value
    assert not runs.continuation_check(full, lines([7.0, 6.5]), 3).ok


@pytest.mark.parametrize(
    "code, out, ok",
    [(0, "....\n40 passed in 12.1s\n", True), (1, "3 failed, 37 passed in 9s\n", False),
     (0, "1 skipped in 0.1s\n", False), (0, "", False)],
)  # fmt: skip
def test_pytest_run_as_a_check(code, out, ok):
    assert runs.pytest_check("kernels", code, out).ok is ok


def test_repo_is_the_checkout():
    """preflight/ moved to the top level: its REPO pointed at the checkout's parent."""
    from common.files import REPO

    assert runs.REPO == REPO


def test_sizes_run_each_real_shape_and_report_peak_memory(monkeypatch, tmp_path):
    import torch

    seen = []

    def fake_launch(run_dir, data, settings):
        seen.append(settings)
        (run_dir / "logs").mkdir(parents=True)
        mib = {"size-1b": 61440.0, "size-3b": 90112.0, "size-8b": 140000.0}[run_dir.name]
        (run_dir / "logs" / "x.log").write_text(f"memory (MB) | max allocated: {mib} | ...\n")
        return [{"iteration": 1, "lm_loss": 11.9, "D": [0.1]}], ""

    props = type("P", (), {"total_memory": 141 * 2**30})()
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda _: props)
    monkeypatch.setattr(runs, "launch", fake_launch)
    checks = runs.sizes(tmp_path, tmp_path, ngpu=8, fp8=True)
    assert [c.ok for c in checks] == [True, True, False]  # 8b's 137 GiB > 95% of 141
    assert checks[0].name == "1b real shape (16L, seq 4096, 128k vocab)"
    assert "peak 60.0 of 141 GiB (micro batch 8, TP=1" in checks[0].value
    args = [next(s for s in x if s.startswith("ARGS=")) for x in seen]
    assert args[0] == "ARGS=--vocab-size 128256 --global-batch-size 64 --eval-iters 1"
    assert args[2].startswith("ARGS=--vocab-size 128256 --global-batch-size 8 ")  # 2 x DP 4
    assert all("FP8=hybrid" in x and "REG=jreg" in x for x in seen)


def test_check_still_needs_one_line():
    with pytest.raises(ValueError):
        Check(name="x", ok=True, value="a\nb")


def test_two_node_mode_pieces(tmp_path):
    """make preflight NODES=2: inside a 2-node job only; the job's 20 iterations; the mpirun
    line that starts one torchrun per host for the inter-node all-reduce."""
    from preflight import two_nodes

    assert two_nodes.job_hosts({}).startswith("error: make preflight NODES=2 runs inside a job")
    nodefile = tmp_path / "nodes"
    nodefile.write_text("h1\n" * 8 + "h2\n" * 8)
    assert two_nodes.job_hosts({"PBS_NODEFILE": str(nodefile)}) == ["h1", "h2"]
    env = two_nodes.job_env(tmp_path / "run", tmp_path / "data")
    assert env["SIZE"] == "tiny" and env["ITERS"] == "20" and env["RUN"] == str(tmp_path / "run")
    metrics = [{"iteration": i, "lm_loss": 7.0 - i / 10, "D": [0.1]} for i in range(1, 21)]
    assert two_nodes.job_check(0, metrics + [{"split": "valid", "lm_loss": 6.0}], 2).ok
    assert not two_nodes.job_check(0, metrics[:12], 2).ok
    assert not two_nodes.job_check(1, metrics, 2).ok
    cmd = two_nodes.allreduce_command(["h1", "h2"], tmp_path / "hf", 29401, 8, tmp_path / "o.json",
                                      "/venv/bin/python")  # fmt: skip
    assert cmd[:9] == ["mpirun", "-np", "2", "-npernode", "1", "-hostfile", str(tmp_path / "hf"),
                       "-bind-to", "none"]  # fmt: skip
    assert ("--nnodes 2 --node-rank $OMPI_COMM_WORLD_RANK --nproc-per-node 8 --master-addr h1 "
            "--master-port 29401 -m preflight.node") in cmd[-1]  # fmt: skip
    assert cmd[-1].endswith("--allreduce-nodes 2")
