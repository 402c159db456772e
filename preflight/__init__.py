"""``make preflight``: prove a GPU node is ready before a long run (README "Run on ABCI").

One command on one node, offline, in minutes: every local GPU takes part. ``node`` runs the
per-GPU checks under torchrun (own GPU per rank, driver vs the wheels' CUDA, NCCL all-reduce
bandwidth, TE/FP8, bf16 matmul peak, init and TE-vs-local spec equivalence); ``runs`` drives the
real launcher (the path a job takes) for the throughput and 1 -> N-GPU equivalence checks;
``table`` prints one PASS/FAIL line per check and decides the exit code.
"""
