# SPDX-License-Identifier: MIT
#
# knlp: a Kconfig-driven experiment matrix. Two commands set everything up:
#   make        creates .venv, applies defconfigs/default if there is no .config,
#               runs the matrix and prints where the results are
#   make test   creates .venv and runs the test suite
# `make help` lists every target and variable.

SHELL := /bin/bash
.DEFAULT_GOAL := all
export PYTHONDONTWRITEBYTECODE := 1

ifeq ($(V),1)
Q :=
else
Q := @
endif

include scripts/venv.Makefile
include scripts/engine/kconfig.Makefile
include scripts/engine/matrix.Makefile
include scripts/test.Makefile
include lib/infer.Makefile

help:
	@echo "knlp: optimizer and pruning experiment matrix (Kconfig -> .config -> runs -> results/)"
	@echo ""
	@echo "Configuration:"
	@echo "  menuconfig        - edit .config in kconfiglib's curses menus"
	@echo "  oldconfig         - update .config to the current Kconfig, asking for new symbols"
	@echo "  olddefconfig      - update .config, taking defaults for new symbols"
	@echo "  savedefconfig     - write the minimal config to ./defconfig"
	@echo "  defconfig-<name>  - apply defconfigs/<name> (see list-defconfigs)"
	@echo "  list-defconfigs   - list the defconfigs with their one-line purpose"
	@echo ""
	@echo "Running:"
	@echo "  all (default)     - run the matrix of .config; finished runs are skipped"
	@echo "  dry-run           - two CPU steps per planned run + memory check, one table"
	@echo "  continue          - resume the most recent matrix with the config it started with"
	@echo "  status            - where the most recent matrix stands, run by run"
	@echo "  cancel            - stop the most recent matrix's runs (RUN=<id prefix>: some)"
	@echo "  runs              - every run (MATRIX=<name>: one matrix's), a line each;"
	@echo "                      FILTER=\"pruning=state sparsity=0.7\", FORMAT=csv"
	@echo "  diffconfig        - A=<run|matrix> B=<run|matrix>: what differs in their configs"
	@echo "  compare           - A=<run|matrix> B=<run|matrix>: metrics side by side, B - A with its interval"
	@echo "  update-graphs     - redraw every matrix's plots and summaries from disk"
	@echo "  power-table       - MATRIX=<folder>: docs/statistics.md's noise floor and power table"
	@echo "  archive           - copy the latest matrix's key results to results/archive/"
	@echo "  dashboard         - serve trackio's dashboard on http://127.0.0.1:7860"
	@echo "  autotune          - warm the kernel autotuning cache for the configured models"
	@echo "  bench-kernels     - benchmark kernels against torch (JSON + Markdown report)"
	@echo ""
	@echo "Using a run (docs/inference.md):"
	@echo "  infer RUN=<id>    - eval metric, sparsity, forward speed dense vs pruned; GPT-2:"
	@echo "                      text after PROMPT=\"...\" (TOKENS=, TEMPERATURE=, TOP_K=, SAMPLE_SEED=)"
	@echo "  export RUN=<id>   - pruned weights + masks + config in one .safetensors (OUT=)"
	@echo ""
	@echo "Maintenance:"
	@echo "  venv              - create .venv and install requirements.txt"
	@echo "  test              - run the test suite (pytest)"
	@echo "  clean-results     - delete results/runs and results/matrices (keeps archive/)"
	@echo "  help              - this text"
	@echo ""
	@echo "Variables:"
	@echo "  TIME=<seconds>    - per-run wall-clock budget; runs stop cleanly and evaluate"
	@echo "  BASELINE=<run id> - show each run's delta against this run (summary and graphs)"
	@echo "  MODELS=<dir>      - where checkpoints and final weights go (default: run folder)"
	@echo "  JOBS=<n>          - runs in parallel (default: one per GPU, 1 on CPU)"
	@echo "  FORCE=1           - re-run even finished runs"
	@echo "  DETACH=1          - SLURM: submit and return; make continue waits again"
	@echo "  RUN=<id prefix>   - make cancel: only these runs"
	@echo "  SEEDS=\"1 2 3\"     - seeds of every cell (CONFIG_MATRIX_SEEDS); SEED=n is SEEDS=n"
	@echo "  SHAPES=\"MxKxN ..\" - bench-kernels: time these matmuls only (e.g. SHAPES=256x2048x1000)"
	@echo "  V=1               - show the commands make runs"

.PHONY: help
