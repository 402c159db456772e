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
export OMP_NUM_THREADS ?= 1
RUNPY := $(UV) run --locked python

.PHONY: help setup test test-fast lint data pretrain
help:
	@echo "make setup | test | lint | data | pretrain SIZE=… REG=…   (see README.md)"

$(CURDIR)/.tools/bin/uv:
	python3 -m pip install -q --target $(CURDIR)/.tools uv

# EXTRAS=gpu adds Transformer Engine (GPU machines). --inexact keeps an extra installed earlier,
# so `make pretrain`/`make test` on a GPU node do not uninstall it again.
EXTRAS ?=
setup: $(if $(filter uv,$(UV)),,$(CURDIR)/.tools/bin/uv)
	$(UV) sync --locked --inexact $(foreach e,$(EXTRAS),--extra $(e))

test: setup
	$(UV) run --locked pytest -q

test-fast: setup
	$(UV) run --locked pytest -q -m "not slow"

lint: setup
	$(UV) run --locked ruff check .
	$(UV) run --locked ruff format --check .

# make pretrain [SIZE=tiny REG=jreg LAMBDA=0.1 WEIGHTS=uniform ITERS= ... ARGS="--megatron-flag ..."]
PRETRAIN_VARS := RUN SIZE REG LAMBDA WEIGHTS ITERS SAVE_INTERVAL LOG_INTERVAL SEED DATA TP PP VPP CP \
	NPROC NNODES NODE_RANK MASTER_ADDR MASTER_PORT FP8 ARGS DRY_RUN
pretrain: setup
	UV='$(UV)' $(CURDIR)/jobs/local.sh $(foreach v,$(PRETRAIN_VARS),$(if $(value $(v)),'$(v)=$($(v))'))

# Data prep (data_prep/): `make data` builds the embedded default corpus into data/default/ and is a
# fast no-op when that output is already complete. Variables map onto `python -m data_prep build`:
# CORPUS (default | embedded:a+b | fineweb-edu | hf:REPO[:CONFIG[:SPLIT]] | files/globs), NAME, VOCAB,
# TOKENIZER (.model | HF dir | tiktoken file), TEXT_FIELD, FORCE=1, WORKERS.
CORPUS ?= default
NAME ?=
VOCAB ?=
TOKENIZER ?=
TEXT_FIELD ?= text
FORCE ?=
WORKERS ?=
DATA_PREP_FLAGS = --corpus '$(CORPUS)' --text-field '$(TEXT_FIELD)' $(if $(NAME),--name '$(NAME)') \
	$(if $(VOCAB),--vocab-size $(VOCAB)) $(if $(TOKENIZER),--tokenizer '$(TOKENIZER)') \
	$(if $(filter 1 true yes,$(FORCE)),--force) $(if $(WORKERS),--workers $(WORKERS))

.PHONY: data-validate
data: setup
	$(RUNPY) -m data_prep build $(DATA_PREP_FLAGS)

data-validate: setup
	$(RUNPY) -m data_prep validate data/$(or $(NAME),default)

# Multi-node jobs (jobs/, README "Run on ABCI"): check the settings here, print the qsub line, and
# submit it only with SUBMIT=1.
# make submit SIZE=8b REG=jreg NODES=4 GROUP=gXXXXX [WALLTIME=24:00:00 QUEUE= SUBMIT=1 ...]
# make submit CLUSTER=slurm SIZE=8b NODES=4 [GROUP=account PARTITION= GPUS_PER_NODE=8 SUBMIT=1]
SUBMIT_VARS := CLUSTER NODES GROUP WALLTIME QUEUE PARTITION GPUS_PER_NODE SUBMIT \
	CUDA_MODULE CUDNN_MODULE NCCL_MODULE HPCX_MODULE \
	RUN SIZE REG LAMBDA WEIGHTS ITERS SAVE_INTERVAL LOG_INTERVAL SEED DATA TP PP VPP CP FP8 ARGS
.PHONY: submit
submit:
	@UV='$(UV)' $(CURDIR)/jobs/submit.sh $(foreach v,$(SUBMIT_VARS),$(if $(value $(v)),'$(v)=$($(v))'))

# Analysis, export and evaluation (eval/, README "Analysis, export and evaluation"); RUN defaults to
# make pretrain's default run, tiny-jreg.
# make analyze [RUN= ITER=all|latest|100,200 SAMPLES=64 SPLIT=test VALID=auto|off|N ALPHA=0.8 FORCE=1 DEVICE= OUT=]
# make plots [RUN=runs/a RUN2=runs/b ... RUN9= OUT=]
# make export [RUN= ITER=latest|all|100,200 DTYPE=as-saved|float32|bfloat16 OUT=]
# make eval [RUN= ITER=all|latest|100,200 TASKS=heldout_lambada,heldout_wikitext LIMIT= BATCH=8 DOCS=500 DEVICE= OUT=]
ANALYZE_VARS := RUN ITER SAMPLES SPLIT VALID ALPHA FORCE DEVICE OUT
PLOTS_VARS := RUN RUN2 RUN3 RUN4 RUN5 RUN6 RUN7 RUN8 RUN9 OUT
EXPORT_VARS := RUN ITER DTYPE OUT
EVAL_VARS := RUN ITER TASKS LIMIT BATCH DOCS DEVICE OUT
.PHONY: analyze plots export eval
analyze: setup
	$(RUNPY) -m eval analyze $(foreach v,$(ANALYZE_VARS),$(if $(value $(v)),'$(v)=$($(v))'))

plots: setup
	$(RUNPY) -m eval plots $(foreach v,$(PLOTS_VARS),$(if $(value $(v)),'$(v)=$($(v))'))

export: setup
	$(RUNPY) -m eval export $(foreach v,$(EXPORT_VARS),$(if $(value $(v)),'$(v)=$($(v))'))

eval: setup
	$(RUNPY) -m eval eval $(foreach v,$(EVAL_VARS),$(if $(value $(v)),'$(v)=$($(v))'))

# The study (study/, docs/study.md): train SIZE=study with REG=none, jreg and jreg WEIGHTS=final
# plus extra seeds, analyse, evaluate, plot and write docs/study.md; re-running continues where it
# stopped. make study [LAMBDA=0.1 WEIGHTS=uniform SEED=1234 SEEDS=1235,1236 PILOTS=dir1,dir2 ...]
# (python -m study help lists every setting)
STUDY_VARS := SIZE ITERS SAVE_INTERVAL LAMBDA WEIGHTS SEED SEEDS DATA ARGS ROOT DOC PILOTS SAMPLES \
	TASKS LIMIT DOCS STAGES
.PHONY: study
study: setup
	$(RUNPY) -m study $(foreach v,$(STUDY_VARS),$(if $(value $(v)),'$(v)=$($(v))'))
