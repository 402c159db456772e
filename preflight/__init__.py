"""``make preflight``: prove a GPU node is ready before a long run (README "Run on ABCI").

One command on one node, offline, in minutes: every local GPU takes part. ``node`` runs the
per-GPU checks under torchrun (own GPU per rank, driver vs the wheels' CUDA, NCCL all-reduce
bandwidth, TE/FP8, every rank's bf16 matmul, init and TE-vs-local spec equivalence); ``runs``
drives the real launcher (the path a job takes) for checkpoint resume, throughput, each SIZE's
real shape and the 1 -> N-GPU equivalence checks; ``limits`` holds every verdict's threshold
(datasheet peak, NVLink/InfiniBand bandwidth, GPU health, time budget); ``two_nodes`` is
``NODES=2``; ``table`` prints one PASS/FAIL line per check and decides the exit code.
"""
