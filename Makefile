# Common tasks. `make test` runs every tox environment: both databases, both Django
# lines, ruff, mypy, the import layers and the migrations check. It needs PostgreSQL
# and Redis on 127.0.0.1.

PYTHON ?= python3
TOOLS_VENV := .venv-tools
BENCH_VENV := .venv-bench
TOX := $(TOOLS_VENV)/bin/tox

.PHONY: demo test test-fast lint bench clean

demo:
	./scripts/demo.sh

test: $(TOX)
	$(TOX) $(TOX_ARGS)

test-fast: $(TOX)
	$(TOX) -e py311-django52-sqlite $(TOX_ARGS)

lint: $(TOX)
	$(TOX) -e ruff,mypy,lint-imports,migrations

$(TOX):
	$(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/pip install --quiet 'tox>=4.11,<5'

bench: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python bench/run.py $(BENCH_ARGS)

$(BENCH_VENV)/.installed: requirements/bench.txt requirements/test.txt requirements/base.txt pyproject.toml
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet -r requirements/bench.txt
	$(BENCH_VENV)/bin/pip install --quiet -e .
	touch $@

clean:
	rm -rf build dist *.egg-info .tox .pytest_cache .mypy_cache .ruff_cache .hypothesis .grimp_cache .import_linter_cache
	rm -rf $(TOOLS_VENV) $(BENCH_VENV)
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
