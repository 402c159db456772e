"""The JREG transformer layer, plugged into GPT models through the layer ModuleSpec.

``JregTransformerLayer`` is Megatron's ``TransformerLayer`` (local or Transformer Engine
submodules alike) that, around the parent's ``__call__``, measures the displacement between its
own input and output and hands both to the ``JregRuntime`` (record D_l, attach the loss term).
It overrides ``__call__`` rather than ``forward`` so that the regulariser stays outside CUDA-graph
capture, and it adds no parameters: checkpoints are those of a plain GPT model.
"""

from __future__ import annotations

from megatron.core.models.gpt.gpt_layer_specs import (
    get_gpt_layer_local_spec,
    get_gpt_layer_with_transformer_engine_spec,
)
from megatron.core.transformer.cuda_graphs import is_graph_capturing
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_layer import TransformerLayer
from megatron.core.utils import make_viewless_tensor

from megatron_ext.config import te_available
from megatron_ext.reg import JregRuntime


class JregTransformerLayer(TransformerLayer):
    """TransformerLayer + per-layer JREG term and D_l recording (``layer_number`` is global)."""

    def __init__(self, *args, jreg: JregRuntime, **kwargs):
        super().__init__(*args, **kwargs)
        self.jreg = jreg

    def __call__(self, *args, **kwargs):
        h_in_sbh = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        result = super().__call__(*args, **kwargs)
        # Under TE graph capture __call__ returns the graph's output tuple: pass it through.
        if is_graph_capturing() or not isinstance(result, tuple) or len(result) != 2:
            return result
        h_out_sbh, context = result
        new_out = self.jreg.apply(self.layer_number, h_in_sbh, h_out_sbh, self.training)
        if new_out is not h_out_sbh:
            # The pipeline schedule frees stage outputs and asserts they are not views
            # (schedules.py deallocate_output_tensor); an autograd Function returning its input
            # yields a view.
            new_out = make_viewless_tensor(new_out, requires_grad=True, keep_graph=True)
        return new_out, context


def jreg_layer_spec(runtime: JregRuntime, use_te: bool | None = None) -> ModuleSpec:
    """The Llama layer spec (TE when available, else local RMSNorm) with the JREG layer class."""
    use_te = te_available() if use_te is None else use_te
    base = (
        get_gpt_layer_with_transformer_engine_spec()
        if use_te
        else get_gpt_layer_local_spec(normalization="RMSNorm")
    )
    return ModuleSpec(
        module=JregTransformerLayer,
        params={**(base.params or {}), "jreg": runtime},
        submodules=base.submodules,
    )
