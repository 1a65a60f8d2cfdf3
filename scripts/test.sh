#!/usr/bin/env bash
# Runs every tox environment, in two lanes at once (the machine's second core is otherwise
# idle while a suite waits on Redis, the database and its worker processes).
#
#   lane A: the environments that run the system tests (tests/conftest.py's SYSTEM_MODULES:
#           fault runs, the demo, the browser, the Celery integration); they start their own
#           servers and brokers, so they run one after another, never beside each other.
#   lane B: the environments that deselect the system tests, the Celery integration at the
#           oldest kombu and Celery (Redis databases of its own, queues named per test), then
#           the linters.
#
# Each test environment has its own Redis database (tox.ini), SQLite file and PostgreSQL test
# database, so the lanes never share state. Lane B is printed as it runs, lane A when it ends;
# the exit status is non-zero if either lane failed. Every environment of `tox -l` must be in
# exactly one lane (checked first), so a new environment cannot be silently left out.
set -uo pipefail

cd "$(dirname "$0")/.."

TOX=${TOX:-tox}
LANE_A=(py311-django52-sqlite py312-django61-postgres)
LANE_B=(py311-django52-postgres py312-django61-sqlite py311-django52-cluster py311-celery54-sqlite ruff mypy lint-imports
        migrations)

join() { local IFS=,; echo "$*"; }

listed=$("$TOX" -l | sort)
laned=$(printf '%s\n' "${LANE_A[@]}" "${LANE_B[@]}" | sort)
if [ "$listed" != "$laned" ]; then
    echo "test.sh: the lanes do not hold exactly tox's environments:" >&2
    diff <(echo "$listed") <(echo "$laned") >&2
    exit 2
fi

mkdir -p .tox
log_a=.tox/lane-a.log
echo "test.sh: lane A ($(join "${LANE_A[@]}")) runs beside this one; its output follows when it ends ($log_a)"

# With job control on, a background command keeps SIGINT's default action (without it, bash
# starts it with SIGINT ignored, and the tests that send a worker a real SIGINT would see it
# ignored); lane A then has a process group of its own, stopped with this script.
set -m
"$TOX" --workdir .tox/lane-a -e "$(join "${LANE_A[@]}")" >"$log_a" 2>&1 &
pid_a=$!
set +m
trap 'kill -TERM -- "-$pid_a" 2>/dev/null' EXIT
trap 'exit 130' INT TERM

"$TOX" --workdir .tox/lane-b -e "$(join "${LANE_B[@]}")"
status_b=$?

wait "$pid_a"
status_a=$?

echo "test.sh: ---- lane A ($(join "${LANE_A[@]}")) ----"
cat "$log_a"
echo "test.sh: lane A exited with $status_a, lane B with $status_b"
[ "$status_a" -eq 0 ] && [ "$status_b" -eq 0 ]
