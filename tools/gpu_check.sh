#!/usr/bin/env bash
# One GPU check for a session with a lent GPU (~8 min on an H200; `make bench-gpu`):
#   1. the fused Triton kernel cases, compiled on CUDA (tests/megatron_ext/jreg_triton_cases.py);
#   2. the GPU part of `make bench`: the displacement alone (eager vs fused, GB/s vs the copy-
#      bandwidth floor), the bf16 matmul peak and, where megatron-core is importable, the 1b
#      training step for REG=none/jreg/l2rel (bf16; FP8 too when Transformer Engine is present).
# Writes everything under $OUT (default runs/bench/gpu): kernel_tests.txt, bench.txt, bench.json.
# Uses the project's environment when there is one (`make setup`), else the machine's python3
# (torch + triton + pytest preinstalled, megatron-core optional).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/bench/gpu}
mkdir -p "$out"
if [ -d .venv ] && [ -n "${UV:-}" ]; then py=("$UV" run --locked python); else py=(python3); fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONDONTWRITEBYTECODE= TRITON_INTERPRET=0
if ! "${py[@]}" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "error: no CUDA GPU visible (or no torch); run this on a GPU machine" >&2
    exit 2
fi
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
status=0
echo "== kernel cases, compiled (limit 180 s)"
timeout 180 "${py[@]}" -m pytest -q -p no:cacheprovider tests/megatron_ext/jreg_triton_cases.py \
    2>&1 | tee "$out/kernel_tests.txt" | tail -15
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
parts=kernel,matmul
if "${py[@]}" -c "import megatron.core" 2>/dev/null; then parts=$parts,train; else
    echo "megatron-core not importable here: training-step part skipped" | tee "$out/bench.txt"; fi
echo "== make bench --device cuda --parts $parts (limit 300 s)"
timeout 300 "${py[@]}" -m bench --device cuda --parts "$parts" \
    --out "$out/bench.json" 2>&1 | tee -a "$out/bench.txt" | grep -v -i warn
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
echo "results in $out (status $status)"
exit $status
