#!/usr/bin/env bash
# The per-node launcher: `make pretrain` runs it on one machine, and the cluster jobs
# (jobs/abci/pretrain.sh, jobs/slurm/pretrain.sbatch) run it once per node with
# NNODES/NODE_RANK/MASTER_ADDR/MASTER_PORT/NPROC added. Arguments are the launcher's VAR=value
# settings (python -m launcher; README "Settings"), e.g.
#   jobs/local.sh SIZE=1b REG=jreg DRY_RUN=1
#
# Python: $LAUNCH_PYTHON when set (the jobs set it to the project's .venv python, so compute
# nodes need no uv), else `uv run --locked python` ($UV names the uv binary; default uv).
set -euo pipefail

# `python -m` imports from the working directory: run from the repo root (the launcher resolves
# relative RUN/DATA paths against it too).
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -n ${LAUNCH_PYTHON:-} ]]; then
  exec "$LAUNCH_PYTHON" -m launcher "$@"
fi
uv=${UV:-uv}
if ! command -v "$uv" >/dev/null 2>&1; then
  echo "error: $uv not found; run make setup (it installs uv), or set LAUNCH_PYTHON" >&2
  exit 2
fi
exec "$uv" run --locked python -m launcher "$@"
