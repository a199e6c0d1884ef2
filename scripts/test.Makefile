# SPDX-License-Identifier: MIT
# The test suite; CI runs exactly `make test` (.ci/run).

PYTEST_ARGS ?=

test: $(STAMP)
	$(Q)$(PY) -m pytest -q $(PYTEST_ARGS)

.PHONY: test
