"""``REG=l2rel``: the relative L2 change |h_l - h_{l-1}| / |h_{l-1}| per token.

The math and its closed-form tests are ``megatron_ext.jreg``; on CUDA the fused Triton twin
(``megatron_ext.jreg_triton``) runs instead.
"""

from megatron_ext.jreg import RelativeL2
from megatron_ext.regularizers import register

register(
    "l2rel",
    help="|h_l - h_{l-1}| / |h_{l-1}| (L2 norms), the relative change of the residual stream",
    fused="megatron_ext.jreg_triton:FusedRelativeL2.apply",
)(RelativeL2.apply)
