# SPDX-License-Identifier: MIT
# Configuration targets, through kconfiglib (its menuconfig/oldconfig/... tools).

KCONFIG_ENV := srctree=$(CURDIR) KCONFIG_CONFIG=.config

menuconfig: $(STAMP)
	$(Q)$(KCONFIG_ENV) $(PY) -m scripts.engine.menuconfig Kconfig

oldconfig: $(STAMP)
	$(Q)$(KCONFIG_ENV) $(VENV)/bin/oldconfig Kconfig

olddefconfig: $(STAMP)
	$(Q)$(KCONFIG_ENV) $(VENV)/bin/olddefconfig Kconfig

savedefconfig: $(STAMP)
	$(Q)$(KCONFIG_ENV) $(VENV)/bin/savedefconfig --kconfig Kconfig --out defconfig
	@echo "wrote ./defconfig (copy it to defconfigs/<name> to keep it)"

defconfig-%: $(STAMP)
	$(Q)$(PY) -m scripts.engine.kconfig defconfig $*

list-defconfigs: $(STAMP)
	@echo "defconfigs (make defconfig-<name>):"
	$(Q)$(PY) -m scripts.engine.kconfig list

# With no .config, `make` applies defconfigs/default and says so.
.config:
	@echo "no .config: applying defconfigs/default (change it with make menuconfig or make defconfig-<name>)"
	$(Q)$(MAKE) --no-print-directory defconfig-default

.PHONY: menuconfig oldconfig olddefconfig savedefconfig list-defconfigs
