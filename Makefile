# Thin wrappers: every target calls a Python entry point or a script; the logic lives there.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv: use the one on PATH, else a private copy installed by `make setup` into .tools/.
UV := $(shell uv --version >/dev/null 2>&1 && echo uv || echo $(CURDIR)/.tools/bin/uv)
# Never download a Python when one is installed (pyenv machines); uv still can where none is.
export UV_PYTHON_PREFERENCE ?= system
# These machines set PYTHONDONTWRITEBYTECODE=1, which makes every Megatron process recompile
# ~3,500 modules (~25 s). An empty value re-enables the bytecode cache.
export PYTHONDONTWRITEBYTECODE :=
# One intra-op thread per process unless set (the launcher's default too; docs/benchmarks.md).
export OMP_NUM_THREADS ?= 1
RUNPY := $(UV) run --locked python

# `make help` prints the `#> ` lines of this file: one per target with its variables (README has
# the details). Every .PHONY target needs one (tests/test_makefile.py checks).
#> make setup [EXTRAS=gpu GPU=1 WHEELS=dir DRY_RUN=1]   uv (into .tools/ if missing) + the locked .venv (GPU=1: + TE built once for sm90)
#> make test                                 the whole test suite (what .ci/run runs)
#> make test-fast                            the suite without the tests marked slow
#> make lint                                 ruff check + ruff format --check
#> make data [CORPUS= NAME= VOCAB= TOKENIZER= TEXT_FIELD= SPLIT= OUT_ROOT= FORCE=1 WORKERS= ADOPT=]   tokenizer + Megatron dataset in data/<NAME> (ADOPT=<prefix>,...: existing .bin/.idx)
#> make data-validate [NAME=default]         check a prepared dataset
#> make pretrain [RUN= SIZE= INIT= TRAIN= REG= LAMBDA= WEIGHTS= SD_K= SD_ALPHA= SD_DIRECTION= SD_TEACHER= SD_CHUNK= ITERS= SAVE_INTERVAL= LOG_INTERVAL= SEED= DATA= TP= PP= VPP= CP= NPROC= NNODES= NODE_RANK= MASTER_ADDR= MASTER_PORT= FP8= TE= ARGS= DRY_RUN=1 PLAN_GPUS= COLLECTIVE_TIMEOUT= CKPT_FALLBACK=1 ALLOW_DATA_CHANGE=1 FORCE_CPU=1 TIME_LIMIT=]   train or resume runs/<RUN>
#> make submit NODES= GROUP= [CLUSTER=abci|slurm WALLTIME= QUEUE= PARTITION= GPUS_PER_NODE= CUDA_MODULE= CUDNN_MODULE= NCCL_MODULE= HPCX_MODULE= SUBMIT=1 RUN= SIZE= INIT= TRAIN= REG= LAMBDA= WEIGHTS= SD_K= SD_ALPHA= SD_DIRECTION= SD_TEACHER= SD_CHUNK= ITERS= SAVE_INTERVAL= LOG_INTERVAL= SEED= DATA= TP= PP= VPP= CP= FP8= TE= ARGS= COLLECTIVE_TIMEOUT= CKPT_FALLBACK=1 ALLOW_DATA_CHANGE=1 TIME_LIMIT= STOP_MARGIN=]   check, print (and submit) a cluster job
#> make analyze [RUN= ITER= SAMPLES= SPLIT= VALID= ALPHA= FORCE=1 DEVICE= OUT= | MODEL=<HF folder|hub id> TEXT= SEQ= BATCH= DTYPE=]   checkpoints (or an HF model) -> analysis.jsonl
#> make plots [RUN= RUN2= RUN3= RUN4= RUN5= RUN6= RUN7= RUN8= RUN9= OUT=]   figures; several runs: <RUN>/plots/compare-.../
#> make export [RUN= ITER= DTYPE= OUT=]      checkpoint -> Hugging Face folder <RUN>/hf/iter_N
#> make import MODEL=<HF folder|hub id> [RUN= DTYPE=]   HF Llama/Qwen2 -> Megatron checkpoint runs/<RUN> (any TP/PP loads it)
#> make eval [RUN= ITER= TASKS= NUM_FEWSHOT= LIMIT= BATCH=|auto DTYPE= MODEL=<HF folder|hub id> KEEP_EXPORTS=0 DOCS= DEVICE= OUT= LAYERS=all|0,8,16]   lm-eval -> <RUN>/lm_eval/scores.{csv,md,png} (LAYERS: per layer, logit lens -> lm_eval/layers.{csv,md,png})
#> make eval-scores [RUN= OUT=]             the scores (and per-layer) tables and plots again from lm_eval/*/results.json
#> make bench [OUT= REPEATS= DEVICE= PARTS=]   JREG's cost: step time/memory none vs jreg vs l2rel vs selfdistill, the displacement eager vs fused
#> make bench-gpu                            on a GPU node: the Triton kernel tests compiled, then bench's GPU part
#> make preflight [WHEELS=dir PYTHON= OUT= NODES=2]  prove a GPU node (NODES=2: inside a 2-node job, the job script and InfiniBand) is ready (PASS/FAIL table; exit 2 without a GPU)
#> make study [SIZE= ITERS= SAVE_INTERVAL= LAMBDA= WEIGHTS= SEED= SEEDS= DATA= ARGS= TE= DEVICE= AT= ROOT= DOC= PILOTS= SAMPLES= TASKS= LIMIT= DOCS= STAGES= JOBS= SCHEDULER=pbs|slurm NODES= GROUP= WALLTIME= QUEUE= PARTITION= GPUS_PER_NODE=]   none vs jreg vs jreg-final (+ seeds) -> docs/study.md
#> make study-pilots [ROOT= LAYERS=12,16,24 SEEDS=1234,1235 LAMBDAS=0.3,1.0,3.0 ITERS=1500 SAVE_INTERVAL= DATA= JOBS= TE= DEVICE=]   the pilot round and the rule that picks the study's depth and LAMBDA
#> make selfdistill-study [SOURCE=runs/study/none ITER= ITERS= LR= ROOT= DOC= STAGES=]   continue a trained run with REG=none/jreg/selfdistill -> docs/selfdistill.md
#> make help                                 this list
.PHONY: help setup test test-fast lint data pretrain bench bench-gpu preflight study
help:
	@sed -n 's/^#> //p' $(firstword $(MAKEFILE_LIST))

$(CURDIR)/.tools/bin/uv:
	python3 -m pip install -q --target $(CURDIR)/.tools uv

# EXTRAS=gpu adds Transformer Engine (GPU machines). --inexact keeps an extra installed earlier,
# so `make pretrain`/`make test` on a GPU node do not uninstall it again. GPU=1 (on a GPU node):
# checks the driver against the wheels' CUDA, builds TE once for sm90 against the locked torch
# into WHEELS (default wheels/; every node reuses it) and installs it (tools/gpu_setup.py).
EXTRAS ?=
GPU ?=
setup: $(if $(filter uv,$(UV)),,$(CURDIR)/.tools/bin/uv)
	$(if $(filter 1,$(GPU)),UV='$(UV)' $(if $(WHEELS),WHEELS='$(WHEELS)') python3 \
		$(CURDIR)/tools/gpu_setup.py $(if $(DRY_RUN),--dry-run),$(UV) sync --locked --inexact \
		$(foreach e,$(EXTRAS),--extra $(e)))

# Both cores: two pytest-xdist workers; tests that share a trained run stay on one worker
# (tests/conftest.py). TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 2
PYTEST := $(UV) run --locked pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadgroup)
test: setup
	$(PYTEST) --durations=30

test-fast: setup
	$(PYTEST) -m "not slow"

lint: setup
	$(UV) run --locked ruff check .
	$(UV) run --locked ruff format --check .

# make pretrain [SIZE=tiny REG=jreg LAMBDA=0.1 WEIGHTS=uniform ITERS= ... ARGS="--megatron-flag ..."]
PRETRAIN_VARS := RUN SIZE INIT TRAIN REG LAMBDA WEIGHTS SD_K SD_ALPHA SD_DIRECTION SD_TEACHER SD_CHUNK \
	ITERS SAVE_INTERVAL LOG_INTERVAL SEED DATA TP PP VPP CP \
	NPROC NNODES NODE_RANK MASTER_ADDR MASTER_PORT FP8 TE ARGS DRY_RUN \
	COLLECTIVE_TIMEOUT CKPT_FALLBACK ALLOW_DATA_CHANGE \
	FORCE_CPU TIME_LIMIT
pretrain: setup
	UV='$(UV)' $(CURDIR)/jobs/local.sh $(foreach v,$(PRETRAIN_VARS),$(if $(value $(v)),'$(v)=$($(v))'))

# Data prep (data_prep/): `make data` builds the embedded default corpus into data/default/ and is a
# fast no-op when that output is already complete. The variables (CORPUS NAME VOCAB TOKENIZER
# TEXT_FIELD SPLIT OUT_ROOT FORCE WORKERS ADOPT) go to `python -m data_prep make`, which maps them
# onto `python -m data_prep build` (or `adopt` with ADOPT=; data_prep/settings.py, also used by the
# data-prep job jobs/data.sh).
DATA_VARS = CORPUS NAME VOCAB TOKENIZER TEXT_FIELD SPLIT OUT_ROOT FORCE WORKERS ADOPT
NAME ?=
OUT_ROOT ?=

.PHONY: data-validate
data: setup
	$(RUNPY) -m data_prep make $(foreach v,$(DATA_VARS),$(if $(value $(v)),'$(v)=$($(v))'))

data-validate: setup
	$(RUNPY) -m data_prep validate $(or $(OUT_ROOT),data)/$(or $(NAME),default)

# Multi-node jobs (jobs/, README "Run on ABCI"): check the settings here, print the qsub line, and
# submit it only with SUBMIT=1.
# make submit SIZE=8b REG=jreg NODES=4 GROUP=gXXXXX [WALLTIME=24:00:00 QUEUE= SUBMIT=1 ...]
# make submit CLUSTER=slurm SIZE=8b NODES=4 [GROUP=account PARTITION= GPUS_PER_NODE=8 SUBMIT=1]
SUBMIT_VARS := CLUSTER NODES GROUP WALLTIME QUEUE PARTITION GPUS_PER_NODE SUBMIT \
	CUDA_MODULE CUDNN_MODULE NCCL_MODULE HPCX_MODULE \
	RUN SIZE INIT TRAIN REG LAMBDA WEIGHTS SD_K SD_ALPHA SD_DIRECTION SD_TEACHER SD_CHUNK ITERS \
	SAVE_INTERVAL LOG_INTERVAL SEED DATA TP PP VPP CP FP8 TE ARGS \
	COLLECTIVE_TIMEOUT CKPT_FALLBACK ALLOW_DATA_CHANGE \
	TIME_LIMIT STOP_MARGIN
.PHONY: submit
submit:
	@UV='$(UV)' $(CURDIR)/jobs/submit.sh $(foreach v,$(SUBMIT_VARS),$(if $(value $(v)),'$(v)=$($(v))'))

# Analysis, export and evaluation (eval/, README "Analysis, export and evaluation"); RUN defaults to
# make pretrain's default run, tiny-jreg.
# make analyze [RUN= ITER=all|latest|100,200 SAMPLES=64 SPLIT=test VALID=auto|off|N ALPHA=0.8 FORCE=1 DEVICE= OUT=]
# make analyze MODEL=<HF folder | hub id> [TEXT=<dataset dir | .txt | .jsonl> SAMPLES=64 SEQ=512 BATCH=4 DTYPE=float32 ALPHA= FORCE= DEVICE= OUT=]
# make plots [RUN=runs/a RUN2=runs/b ... RUN9= OUT=]
# make export [RUN= ITER=latest|all|100,200 DTYPE=as-saved|float32|bfloat16 OUT=]
# make import MODEL=<HF Llama/Qwen2 folder | hub id> [RUN=runs/import-<name> DTYPE=float32|bfloat16]
# make eval [RUN= ITER=all|latest|100,200 TASKS=heldout_perplexity,heldout_lastword NUM_FEWSHOT= LIMIT= BATCH=8|auto DTYPE= MODEL= KEEP_EXPORTS=1 DOCS=500 DEVICE= OUT= LAYERS=all|0,8,16]
# make eval-scores [RUN= OUT=]  (the table and plot again, from results files)
ANALYZE_VARS := RUN ITER SAMPLES SPLIT VALID ALPHA FORCE DEVICE OUT MODEL TEXT SEQ BATCH DTYPE
PLOTS_VARS := RUN RUN2 RUN3 RUN4 RUN5 RUN6 RUN7 RUN8 RUN9 OUT
EXPORT_VARS := RUN ITER DTYPE OUT
IMPORT_VARS := MODEL RUN DTYPE
EVAL_VARS := RUN ITER TASKS NUM_FEWSHOT LIMIT BATCH DTYPE MODEL KEEP_EXPORTS DOCS DEVICE OUT LAYERS
.PHONY: analyze plots export import eval eval-scores
analyze: setup
	$(RUNPY) -m eval analyze $(foreach v,$(ANALYZE_VARS),$(if $(value $(v)),'$(v)=$($(v))'))

plots: setup
	$(RUNPY) -m eval plots $(foreach v,$(PLOTS_VARS),$(if $(value $(v)),'$(v)=$($(v))'))

export: setup
	$(RUNPY) -m eval export $(foreach v,$(EXPORT_VARS),$(if $(value $(v)),'$(v)=$($(v))'))

import: setup
	$(RUNPY) -m eval import $(foreach v,$(IMPORT_VARS),$(if $(value $(v)),'$(v)=$($(v))'))

eval: setup
	$(RUNPY) -m eval eval $(foreach v,$(EVAL_VARS),$(if $(value $(v)),'$(v)=$($(v))'))

eval-scores: setup
	$(RUNPY) -m eval scores $(foreach v,RUN OUT,$(if $(value $(v)),'$(v)=$($(v))'))

# What JREG costs (bench/; not in CI, a smoke of it is): step time, tokens/s and
# memory for REG=none/jreg/l2rel/selfdistill, the displacement alone eager vs fused, MFU on a GPU.
# make bench [OUT=runs/bench/bench.json REPEATS= DEVICE=auto|cpu|cuda PARTS=train,kernel,matmul]
REPEATS ?=
PARTS ?=
bench: setup
	$(RUNPY) -m bench --out '$(or $(OUT),runs/bench/bench.json)' \
		$(if $(REPEATS),--repeats $(REPEATS)) $(if $(DEVICE),--device $(DEVICE)) \
		$(if $(PARTS),--parts $(PARTS))

# One GPU session (~8 min): the Triton kernel cases compiled on CUDA, then the GPU part of bench.
bench-gpu: setup
	UV='$(UV)' $(CURDIR)/tools/gpu_check.sh

# make preflight [WHEELS=dir PYTHON=python3 OUT=dir]: prove a GPU node is ready (README "Run on
# ABCI"); exit 0 only if every check passes, 2 without a GPU. Offline. PYTHON= runs it with an
# interpreter that already has torch (no uv); WHEELS= first installs every wheel in that folder
# (into PYTHON with pip, else into .venv with uv pip), from that folder only (--no-index).
PYTHON ?=
WHEELS ?=
PREFLIGHT_PY = $(if $(PYTHON),$(PYTHON),$(RUNPY))
WHEELS_INSTALL = $(if $(PYTHON),$(PYTHON) -m pip install,$(UV) pip install --python .venv/bin/python)
preflight: $(if $(PYTHON),,setup)
	$(if $(WHEELS),$(WHEELS_INSTALL) --no-index --find-links '$(WHEELS)' '$(WHEELS)'/*.whl)
	PYTHONPATH=$(CURDIR) $(if $(OUT),OUT='$(OUT)') $(if $(NODES),NODES='$(NODES)') \
		$(PREFLIGHT_PY) -m preflight

# The study (study/, docs/study.md): train SIZE=study with REG=none, jreg and jreg WEIGHTS=final
# plus extra seeds, analyse, evaluate, plot and write docs/study.md; re-running continues where it
# stopped. make study [LAMBDA=0.1 WEIGHTS=uniform SEED=1234 SEEDS=1235,1236 PILOTS=dir1,dir2 ...]
# (python -m study help lists every setting). On a cluster: make study SIZE=1b SCHEDULER=pbs|slurm
# NODES=4 GROUP=gXXXXX [WALLTIME= QUEUE= PARTITION= GPUS_PER_NODE=] submits one training job per
# run (jobs/submit.sh), then jobs/study.sh (analyze, eval, plots, report) after them.
STUDY_VARS := SIZE ITERS SAVE_INTERVAL LAMBDA WEIGHTS SEED SEEDS DATA ARGS TE DEVICE AT ROOT DOC PILOTS SAMPLES \
	TASKS LIMIT DOCS STAGES JOBS SCHEDULER NODES GROUP WALLTIME QUEUE PARTITION GPUS_PER_NODE
.PHONY: study
study: setup
	$(RUNPY) -m study $(foreach v,$(STUDY_VARS),$(if $(value $(v)),'$(v)=$($(v))'))

# The pilot round (study/pilots.py): REG=none at each depth and seed, REG=jreg at each LAMBDA, then
# the fixed rule that picks the study's depth and LAMBDA -> <ROOT>/choice.json.
# The self-distillation experiment (study/selfdistill.py): continue a trained run with REG=none,
# jreg and selfdistill from the same exported-then-imported weights -> docs/selfdistill.md.
SD_STUDY_VARS := SOURCE ITER ITERS LR ROOT DOC STAGES
.PHONY: selfdistill-study
selfdistill-study: setup
	$(RUNPY) -m study.selfdistill $(foreach v,$(SD_STUDY_VARS),$(if $(value $(v)),'$(v)=$($(v))'))

PILOT_VARS := ROOT LAYERS SEEDS LAMBDAS ITERS SAVE_INTERVAL DATA JOBS TE DEVICE
.PHONY: study-pilots
study-pilots: setup
	$(RUNPY) -m study.pilots $(foreach v,$(PILOT_VARS),$(if $(value $(v)),'$(v)=$($(v))'))
