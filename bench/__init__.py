"""``make bench``: what a regulariser costs (step time, memory, kernels). A program that uses
``megatron_ext``, outside it: ``python -m bench``."""
