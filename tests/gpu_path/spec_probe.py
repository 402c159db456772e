"""Build a real local-spec JREG model (CPU, gloo, one process) from a TransformerConfig with
--qk-layernorm, initialise it, and write each parameter's name, owning module class and whether
it is all ones (``python -m tests.gpu_path.spec_probe --out FILE``)."""

from __future__ import annotations

import json

from megatron_ext import cpu_compat

cpu_compat.enable()

from megatron_ext.init import param_owners  # noqa: E402
from megatron_ext.regconfig import JregConfig  # noqa: E402
from tests.megatron_ext.reference import model_with  # noqa: E402
from tests.megatron_ext.scenarios import MODEL, SEED, one_process  # noqa: E402


def main() -> None:
    with one_process(SEED) as out_path:
        jcfg = JregConfig(num_layers=MODEL.num_layers)
        model, _, _ = model_with(jcfg, use_te=False, qk_layernorm=True)
        owners = param_owners(model)
        out = {
            name: {"owner": type(owners[name][0]).__name__, "ones": bool((p == 1).all())}
            for name, p in model.named_parameters()
        }
        with open(out_path, "w") as f:
            json.dump(out, f)


if __name__ == "__main__":
    main()
