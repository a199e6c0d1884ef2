# SPDX-License-Identifier: MIT
# The matrix: run it, resume it, check it, report it (scripts/engine/matrix.py).

ifneq ($(and $(SEED),$(SEEDS)),)
$(error SEED= and SEEDS= both given; SEED=n is SEEDS=n, give one)
endif
MATRIX_ARGS := $(if $(JOBS),--jobs $(JOBS)) $(if $(TIME),--time $(TIME)) \
	$(if $(MODELS),--models $(MODELS)) $(if $(BASELINE),--baseline $(BASELINE)) \
	$(if $(SEEDS)$(SEED),--seeds "$(SEEDS)$(SEED)") $(if $(filter 1 y yes,$(FORCE)),--force) \
	$(if $(filter 1 y yes,$(DETACH)),--detach) $(if $(RUN),--run $(RUN))

all: $(STAMP) .config
	$(Q)$(PY) -m scripts.engine.matrix run $(MATRIX_ARGS)

continue: $(STAMP)
	$(Q)$(PY) -m scripts.engine.matrix continue $(MATRIX_ARGS)

cancel: $(STAMP)
	$(Q)$(PY) -m scripts.engine.matrix cancel $(MATRIX_ARGS)

dry-run: $(STAMP) .config
	$(Q)$(PY) -m scripts.engine.matrix dry-run $(MATRIX_ARGS)

status: $(STAMP)
	$(Q)$(PY) -m scripts.engine.matrix status $(MATRIX_ARGS)

update-graphs: $(STAMP)
	$(Q)$(PY) -m scripts.engine.matrix update-graphs $(MATRIX_ARGS)

archive: $(STAMP)
	$(Q)$(PY) -m scripts.engine.matrix archive $(MATRIX_ARGS)

dashboard: $(STAMP)
	$(no_seeds)$(Q)TRACKIO_DIR=$(CURDIR)/results/trackio $(VENV)/bin/trackio show \
		--project "$$($(PY) -c "from scripts.engine import plan; print(plan.plan('.config').name)")"

clean-results:
	$(Q)rm -rf results/runs results/matrices results/trackio results/.lock

# Query and compare finished work (scripts/engine/query.py). They plan nothing, so a
# SEEDS= or SEED= there would be ignored: refused by name instead (as by infer, export,
# dashboard, autotune and bench-kernels).
no_seeds = $(if $(SEEDS)$(SEED),$(error SEEDS=/SEED= does nothing for `make $@`; drop it))

runs: $(STAMP)
	$(no_seeds)$(Q)$(PY) -m scripts.engine.query runs $(if $(MATRIX),--matrix "$(MATRIX)") \
		$(if $(FILTER),--filter "$(FILTER)") $(if $(FORMAT),--format $(FORMAT))

diffconfig: $(STAMP)
	$(no_seeds)$(Q)$(PY) -m scripts.engine.query diffconfig --a "$(A)" --b "$(B)"

compare: $(STAMP)
	$(no_seeds)$(Q)$(PY) -m scripts.engine.query compare --a "$(A)" --b "$(B)"

.PHONY: all continue cancel dry-run status update-graphs archive dashboard clean-results
.PHONY: runs diffconfig compare

# docs/statistics.md's measured noise floor and power table, from a 3-seed matrix's folder
power-table: $(STAMP)
	$(no_seeds)$(Q)$(PY) -m scripts.engine.power_table "$(MATRIX)"

.PHONY: power-table

# Kernels (docs/kernels.md): warm the autotuning cache; benchmark against torch.
BENCH_OUT ?= results/kernels/bench-$(shell date +%F)
autotune: $(STAMP)
	$(no_seeds)$(Q)$(PY) -m kernels.autotune --preset gpt2 --preset resnet --dtype bf16

bench-kernels: $(STAMP)
	$(no_seeds)$(Q)$(PY) -m scripts.bench.kernel_ops --out $(BENCH_OUT).json --md $(BENCH_OUT).md --table results/benchmarks.csv \
		$(if $(BASELINE),--baseline $(BASELINE)) $(if $(SHAPES),--ops matmul --shapes $(SHAPES))

.PHONY: autotune bench-kernels
