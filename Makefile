# Two commands a newcomer needs:   make demo   and   make test
# Both create ./.venv on first use. constraints.txt pins the CPU build of torch for the install.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck protos-check bench clean dashboard dashboard-check

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/dcnr demo

test: $(STAMP)
	$(BIN)/ruff check dcnr tests benchmarks examples
	$(BIN)/mypy
	$(BIN)/pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_topology1.py
	$(BIN)/python benchmarks/bench_cluster.py
	$(BIN)/python benchmarks/bench_recovery.py

# The dashboard's bundle is committed (dcnr/dashboard/static); rebuilding it needs node >= 20.12 and npm.
DASHBOARD_WEB := dcnr/dashboard/web

dashboard:
	cd $(DASHBOARD_WEB) && npm ci --no-audit --no-fund && node build.mjs

dashboard-check:  # a fresh build must be byte-identical to the committed one
	cd $(DASHBOARD_WEB) && npm ci --no-audit --no-fund && node build.mjs --check

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
