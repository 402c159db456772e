"""JREG for Megatron-Core: the regulariser, its Megatron wiring, metrics and CPU support.

Import order matters on machines without a GPU: call ``megatron_ext.cpu_compat.enable()`` before
building Megatron objects (the training entry point does this once).
"""
