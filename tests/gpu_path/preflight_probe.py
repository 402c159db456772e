"""The preflight's spec comparison on CPU (fp32, one process, gloo): two local-spec models from
the same seed (PASS), from another seed (FAIL), and with the norm gains drawn like weights, the
TE-spec bug of issue 9 (FAIL). ``python -m tests.gpu_path.preflight_probe --out FILE``."""

from __future__ import annotations

import json
from dataclasses import asdict

import torch

from megatron_ext import cpu_compat

cpu_compat.enable()

from preflight import spec_check  # noqa: E402
from tests.megatron_ext.scenarios import one_process  # noqa: E402


def main() -> None:
    with one_process(spec_check.SEED) as out:
        same = spec_check.spec_checks(torch.float32, "cpu", te=False)
        other_seed = spec_check.spec_checks(torch.float32, "cpu", te=False, other_seed=99)
        # the bug: norm gains initialised like weights
        data = spec_check.batch("cpu")
        ref_model, ref_tracker = spec_check.build(False, torch.float32, "cpu")
        bad_model, bad_tracker = spec_check.build(False, torch.float32, "cpu")
        with torch.no_grad():
            for name, p in bad_model.named_parameters():
                if name.endswith("layernorm.weight"):
                    p.normal_(0.0, 0.02)
        count, not_one = spec_check.norm_gains_are_one(bad_model)
        tampered = spec_check.compare(
            "tampered", spec_check.first_step(ref_model, ref_tracker, data),
            spec_check.first_step(bad_model, bad_tracker, data),
            spec_check.TOLERANCE[torch.float32],
        )  # fmt: skip
        result = {
            "same": [asdict(c) for c in same], "other_seed": [asdict(c) for c in other_seed],
            "tampered": asdict(tampered), "tampered_gains": [count, len(not_one)],
        }  # fmt: skip
        with open(out, "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main()
