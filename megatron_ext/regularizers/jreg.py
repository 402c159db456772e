"""``REG=jreg``: the JREG paper's displacement Psi = (1 - cos(h_{l-1}, h_l)) / 2 per token.

The math and its closed-form tests are ``megatron_ext.jreg``; on CUDA the fused Triton twin
(``megatron_ext.jreg_triton``) runs instead. This is also the Psi every run tracks as D_l.
"""

from megatron_ext.jreg import Displacement
from megatron_ext.regularizers import register

register(
    "jreg",
    help="Psi = (1 - cos(h_{l-1}, h_l)) / 2, the displacement D_l measures",
    fused="megatron_ext.jreg_triton:FusedDisplacement.apply",
)(Displacement.apply)
