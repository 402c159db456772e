#!/usr/bin/env bash
# The whole study round on one GPU machine in one sitting: the pilot round (study/pilots.py picks
# the depth and LAMBDA by its fixed rule), then make study's runs at that shape, all side by side.
#
# Why side by side: the study's models (width 64, 1,024 tokens a step) leave one GPU almost idle
# (each step is kernel-launch bound), so 11-15 runs at once take little longer than one. Written
# for the 15-minute device lease of this project (docs/study.md says when and where it ran):
# everything must end inside BUDGET seconds, so if the pilots show the main runs would not finish
# their 3000 iterations in the time left, ITERS is lowered (to a multiple of 300) and the report
# states it. Task scores (lm-eval) are not run here; the analysis is.
#
#   BUDGET=540 OUTDIR=/tmp/out bash study/one_gpu.sh     (from the repository root, data/default built)
set -u
BUDGET=${BUDGET:-540}
OUTDIR=${OUTDIR:-runs/one_gpu_out}
SEEDS=${SEEDS:-1235,1236,1237,1238}
PILOT_ITERS=${PILOT_ITERS:-1500}
FULL_ITERS=${FULL_ITERS:-3000}
LAYERS=${LAYERS:-12,16,24}
LAMBDAS=${LAMBDAS:-0.3,1.0,3.0}
JOBS=${JOBS:-15}
SAVE=${SAVE:-300}
start=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - start))); }
mkdir -p "$OUTDIR"
export OMP_NUM_THREADS=1 WANDB_MODE=disabled PYTHONUNBUFFERED=1
py=${PYTHON:-python3}

# Analysis on the GPU unless a 20-iteration smoke run's analysis fails there.
device=cuda
$py -m launcher RUN=runs/smoke SIZE=study ITERS=20 SAVE_INTERVAL=20 TE=0 \
    "ARGS=--num-layers 2 --eval-interval 20" >"$OUTDIR/smoke.log" 2>&1 || echo "smoke training failed"
$py -m eval analyze RUN=runs/smoke ITER=20 SAMPLES=8 DEVICE=cuda >>"$OUTDIR/smoke.log" 2>&1 ||
    device=cpu
echo "analysis device: $device ($(left) s left)"

pilot_start=$(date +%s)
timeout $(($(left) / 3)) $py -m study.pilots SAVE_INTERVAL=$SAVE ROOT=runs/pilots JOBS="$JOBS" ITERS="$PILOT_ITERS" TE=0 \
    LAYERS="$LAYERS" LAMBDAS="$LAMBDAS" DEVICE=$device >"$OUTDIR/pilots.log" 2>&1
pilot_s=$(($(date +%s) - pilot_start))
tail -8 "$OUTDIR/pilots.log"
choice=$($py -c "import json; c = json.load(open('runs/pilots/choice.json')); print(c['layers'], c['lambda'])" 2>/dev/null || echo "12 1.0")
read -r layers lam <<<"$choice"

# Time per iteration from the pilots (15 runs at once, with analysis): main runs get 2x margin.
room=$(($(left) - 60))
iters=$($py -c "f = $FULL_ITERS; per = $pilot_s / $PILOT_ITERS; n = int($room / (2 * per)) // $SAVE * $SAVE
print(max($SAVE, min(f, n)))")
echo "pilots took ${pilot_s} s; study: $layers layers, LAMBDA $lam, ITERS $iters ($(left) s left)"
timeout $(($(left) - 45)) $py -m study SIZE=study "ARGS=--num-layers $layers" LAMBDA="$lam" \
    ITERS="$iters" SAVE_INTERVAL=$SAVE SEEDS="$SEEDS" JOBS=11 STAGES=train,analyze TE=0 \
    DEVICE=$device PILOTS=runs/pilots >"$OUTDIR/study.log" 2>&1
echo "study exit $? ($(left) s left)"
tail -5 "$OUTDIR/study.log"

# What comes back: the none run's last checkpoint whole (the self-distillation experiment starts
# from it), every other checkpoint as its metadata only (the weights are not needed by the report).
last=$(cat runs/study/none/checkpoints/latest_checkpointed_iteration.txt 2>/dev/null || echo 0)
keep=runs/study/none/checkpoints/iter_$(printf %07d "$last")
[ -d "$keep" ] && tar cf - "$keep" runs/study/none/checkpoints/latest_checkpointed_iteration.txt |
    split -b 15M - "$OUTDIR/none_ckpt.tar.part-"
find runs/pilots runs/study -name '*.distcp' -delete
tar czf "$OUTDIR/runs.tgz" runs/pilots runs/study
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUTDIR/gpu.txt" 2>&1
ls -la "$OUTDIR"
