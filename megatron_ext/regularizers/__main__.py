"""``python -m megatron_ext.regularizers``: every ``REG=`` value with its help (no torch import)."""

from megatron_ext.regularizers import describe

print("\n".join(describe()))
