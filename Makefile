# Common tasks. `make test` runs every tox environment: both databases, both Django
# lines, ruff, mypy, the import layers and the migrations check. It needs PostgreSQL,
# Redis and RabbitMQ (for the Celery bridge) on 127.0.0.1.

PYTHON ?= python3
TOOLS_VENV := .venv-tools
BENCH_VENV := .venv-bench
TOX := $(TOOLS_VENV)/bin/tox
# The admin's browser test drives this Chromium (Playwright's own browser download is not used).
JOBQUEUE_TEST_CHROMIUM ?= /usr/bin/chromium
export JOBQUEUE_TEST_CHROMIUM

.PHONY: demo test test-fast lint bench clean chromium

demo:
	./scripts/demo.sh

# Every environment, two at a time (scripts/test.sh); with TOX_ARGS, plain tox with them.
test: $(TOX) chromium
ifdef TOX_ARGS
	$(TOX) $(TOX_ARGS)
else
	TOX=$(TOX) ./scripts/test.sh
endif

test-fast: $(TOX) chromium
	$(TOX) -e py311-django52-sqlite $(TOX_ARGS)

# Debian's chromium, installed when it is missing and we may (root, apt-get); else a clear stop.
chromium:
	@if [ -x "$(JOBQUEUE_TEST_CHROMIUM)" ]; then \
		:; \
	elif [ "$(JOBQUEUE_TEST_CHROMIUM)" = /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 \
			&& [ "$$(id -u)" = 0 ]; then \
		echo "make: installing Debian's chromium for the admin's browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
			&& [ -x /usr/bin/chromium ]; \
	else \
		echo "make: the admin's browser test needs Chromium at $(JOBQUEUE_TEST_CHROMIUM)." >&2; \
		echo "      Install Debian's chromium package (apt-get install chromium, as root), or set" >&2; \
		echo "      JOBQUEUE_TEST_CHROMIUM to a Chromium binary." >&2; \
		exit 1; \
	fi

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
