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
from megatron.core.transformer.transformer_config import TransformerConfig
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


def base_layer_spec(config: TransformerConfig | None, use_te: bool) -> ModuleSpec:
    """Megatron's GPT layer spec for ``config``, built as megatron.training builds it
    (megatron/training/models/gpt.py:94-131 ``_te_or_local_layer_spec`` in megatron-core 0.19.2),
    so flags that change the spec (--qk-layernorm, --qk-l2-norm, --use-te-activation-func,
    --normalization, ...) reach it. ``config=None``: the defaults with RMSNorm (tests only).
    (megatron.training's use_te_op_fuser check inspects a ``*args, **kwargs`` wrapper and is
    never true in 0.19.2, so it is not passed here either.)"""
    if config is None:
        config = _DEFAULTS
    if use_te:
        return get_gpt_layer_with_transformer_engine_spec(
            num_experts=config.num_moe_experts, moe_grouped_gemm=config.moe_grouped_gemm,
            qk_layernorm=config.qk_layernorm, multi_latent_attention=config.multi_latent_attention,
            qk_l2_norm=config.qk_l2_norm, use_kitchen=config.use_kitchen,
            use_te_activation_func=config.use_te_activation_func,
            use_kitchen_attention=config.use_kitchen_attention,
            kitchen_attention_backend=config.kitchen_attention_backend,
            use_grouped_gemm_for_dense_mlp=config.use_grouped_gemm_for_dense_mlp,
        )  # fmt: skip
    return get_gpt_layer_local_spec(
        num_experts=config.num_moe_experts, moe_grouped_gemm=config.moe_grouped_gemm,
        qk_layernorm=config.qk_layernorm, multi_latent_attention=config.multi_latent_attention,
        normalization=config.normalization, qk_l2_norm=config.qk_l2_norm,
        use_kitchen=config.use_kitchen, use_kitchen_attention=config.use_kitchen_attention,
        kitchen_attention_backend=config.kitchen_attention_backend,
    )  # fmt: skip


class _Defaults:
    """TransformerConfig's spec-relevant defaults, for ``base_layer_spec(None, ...)``."""

    num_moe_experts = None
    moe_grouped_gemm = False
    qk_layernorm = False
    multi_latent_attention = False
    qk_l2_norm = False
    use_kitchen = False
    use_te_activation_func = False
    use_kitchen_attention = False
    kitchen_attention_backend = "sdpa"
    use_grouped_gemm_for_dense_mlp = False
    normalization = "RMSNorm"


_DEFAULTS = _Defaults()


def jreg_layer_spec(
    runtime: JregRuntime, use_te: bool | None = None, config: TransformerConfig | None = None
) -> ModuleSpec:
    """The Llama layer spec for ``config`` (TE when available, else local) with the JREG layer
    class. JREG measures whole layers, so only a dense TransformerLayer spec is accepted."""
    use_te = te_available() if use_te is None else use_te
    base = base_layer_spec(config, use_te)
    if base.module is not TransformerLayer:
        raise ValueError(
            f"JREG needs a dense TransformerLayer spec; these settings give {base.module.__name__}"
        )
    return ModuleSpec(
        module=JregTransformerLayer,
        params={**(base.params or {}), "jreg": runtime},
        submodules=base.submodules,
    )
