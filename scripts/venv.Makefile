# SPDX-License-Identifier: MIT
# The virtual environment: created on first use, re-installed when requirements.txt or
# pyproject.toml changes. The project itself is installed editable (pyproject.toml).

VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

$(STAMP): requirements.txt pyproject.toml
	$(Q)test -x $(PY) || { echo "  VENV    $(VENV) (first time: torch and friends, a few minutes)"; python3 -m venv $(VENV); }
	$(Q)set -o pipefail; $(PY) -m pip install -q --disable-pip-version-check -r requirements.txt 2>&1 \
		| { grep -v "^WARNING: Location" || true; }
	$(Q)set -o pipefail; $(PY) -m pip install -q --disable-pip-version-check --no-deps -e . 2>&1 \
		| { grep -v "^WARNING: Location" || true; }
	$(Q)touch $@

venv: $(STAMP)

.PHONY: venv
