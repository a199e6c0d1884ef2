# SPDX-License-Identifier: MIT
# Using a trained run (docs/inference.md): evaluate it, time it, generate text (lib/infer.py);
# export its pruned weights, masks and config to one .safetensors file (lib/export.py).

INFER_ARGS := $(if $(DEVICE),--device $(DEVICE)) $(if $(TOKENS),--tokens $(TOKENS)) \
	$(if $(TEMPERATURE),--temperature $(TEMPERATURE)) $(if $(TOP_K),--top-k $(TOP_K)) \
	$(if $(SAMPLE_SEED),--seed $(SAMPLE_SEED)) \
	$(if $(PROMPT),--prompt '$(subst ','\'',$(PROMPT))')

define need-run
	$(Q)test -n "$(RUN)" || { echo "error: $@ needs RUN=<run id or unique prefix> (the folders of results/runs/)" >&2; exit 2; }
endef

infer: $(STAMP)
	$(no_seeds)$(need-run)
	$(Q)$(PY) -m lib.infer --run '$(RUN)' $(INFER_ARGS)

export: $(STAMP)
	$(no_seeds)$(need-run)
	$(Q)$(PY) -m lib.export --run '$(RUN)' $(if $(OUT),--out '$(OUT)')

.PHONY: infer export
