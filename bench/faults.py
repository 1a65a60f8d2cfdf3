#!/usr/bin/env python
"""Reliability under faults: real workers, real Redis and PostgreSQL, one fault at a time.

    python bench/faults.py                          # every scenario, full size (~7 min on 2 cores)
    python bench/faults.py --size small             # the sizes the test suite runs
    python bench/faults.py --scenario kill9,pg-restart --json out.json

The runner starts its own ``redis-server`` and its own PostgreSQL 15 cluster (``initdb``
and ``pg_ctl`` as the ``postgres`` user when run as root) on free ports, so it can
flush, stop and restart them without touching any other server on the machine. It
prints one Markdown table row per scenario and exits non-zero if any check failed.

Scenarios: ``kill9`` (SIGKILL a random worker every 2 s), ``redis-flush`` (FLUSHALL
mid-run), ``redis-restart`` (Redis down 3 s, enqueueing meanwhile), ``pg-restart``
(``pg_ctl restart -m fast``), ``contention`` (topics of concurrency 1 and 3 under many
workers), ``transactions`` (enqueue in transactions that commit or roll back),
``slow`` (handlers past their timeout; handlers that ignore stop requests),
``enqueuer-cut`` (the enqueuer cannot reach Redis, which keeps running) and
``enqueuer-kill`` (enqueuing processes SIGKILLed between commit and push): those two
are found by the workers' reconciliation, without a restart. ``bridge-kill9`` and
``bridge-kill9-redis`` SIGKILL ``manage.py jobbridge celery`` a few times while it turns
Celery messages into jobs (RabbitMQ: the machine's; Redis: the lab's): every message
must become exactly one job, and run. ``redis-failover`` runs on a Redis Cluster of its
own (scripts/redis-cluster.sh, ports 7010-7015 or ``JOBQUEUE_FAULTS_CLUSTER_PORT``): the
master of a topic of concurrency 1 is killed with SIGKILL mid-drain, its replica promoted,
and its last writes taken away; the workers find the loss through that topic's epoch.
``flow-kill9`` and ``flow-redis-flush`` repeat the kills and the flushes on a topic with a
rate limit and one running job per key: nothing lost, no key over its limit, no window
with more starts than the rate's bucket allows.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.faultapp.lab import Lab  # noqa: E402
from bench.faultapp.scenarios import SCENARIOS, SIZES, Result  # noqa: E402

#: Scenarios that need the lab's own PostgreSQL whatever database the others use.
NEEDS_POSTGRES = {"pg-restart"}

COLUMNS = ["Scenario", "Size", "Injected", "Jobs", "Succeeded", "Lost", "Executed twice",
           "Lost attempts marked", "Max concurrent", "Time", "Result"]


def run_scenarios(names: list[str], size: str = "full", db: str = "postgres", keep: bool = False,
                  progress: Any = None) -> list[dict[str, Any]]:
    """Run ``names`` and return each scenario's result as a dict (``key`` is its name).

    They share one lab; with ``db="sqlite"`` the scenarios that need PostgreSQL run in a
    second runner process, since this one's Django is then set up on SQLite.
    """
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise ValueError(f"Unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    if size not in SIZES:
        raise ValueError(f"Unknown size {size!r}; use small or full")
    here = [n for n in names if db == "postgres" or n not in NEEDS_POSTGRES]
    elsewhere = [n for n in names if n not in here]
    results: dict[str, dict[str, Any]] = {}
    if here:
        results.update(_run_in_lab(here, size, db, keep, progress))
    if elsewhere:  # this process's Django is set up on another database: a second runner takes them
        results.update(_run_in_subprocess(elsewhere, size, keep, progress))
    return [results[n] for n in names]


def _run_in_subprocess(names: list[str], size: str, keep: bool, progress: Any) -> dict[str, dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.json"
        argv = [sys.executable, __file__, "--scenario", ",".join(names), "--size", size, "--db", "postgres",
                "--json", str(out), *(["--keep"] if keep else [])]
        done = subprocess.run(argv, capture_output=True, text=True)
        if not out.exists():
            raise RuntimeError(f"the PostgreSQL runner failed:\n{done.stderr[-3000:]}")
        found = {r["key"]: r for r in json.loads(out.read_text())}
    if progress is not None:
        for name in names:
            r = found[name]
            progress(Result(r["scenario"], size, r["injected"], seconds=r["seconds"], problems=r["problems"]))
    return found


def _run_in_lab(names: list[str], size: str, db: str, keep: bool, progress: Any) -> dict[str, dict[str, Any]]:
    lab = Lab(db=db, keep=keep)
    results: dict[str, dict[str, Any]] = {}
    try:
        lab.start()
        for name in names:
            began = time.monotonic()
            try:
                result = SCENARIOS[name](lab, SIZES[size][name], size)
            except Exception:  # noqa: BLE001 - one broken scenario must not hide the others
                result = Result(name, size, "", problems=[f"the scenario crashed:\n{traceback.format_exc()}"])
                lab.stop_workers(grace=2)
            result.seconds = round(time.monotonic() - began, 1)
            results[name] = dict(result.as_dict(), key=name)
            if progress is not None:
                progress(result)
    finally:
        lab.close()
    return results


def twice_cell(r: dict[str, Any]) -> str:
    n = r["executed_twice"]
    if not n:
        return f"0 of {r['jobs']}"
    cause = r.get("twice_cause", "a kill")
    why = f"all after {cause}" if r["twice_after_kill"] else f"NOT all after {cause}"
    return f"{n} of {r['jobs']} ({why})"


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in results:
        cells = [r["scenario"], r["size"], r["injected"], str(r["jobs"]), str(r["succeeded"]), str(r["lost"]),
                 twice_cell(r), r["lost_marked"], r["max_concurrent"], f"{r['seconds']:.0f} s",
                 "ok" if r["ok"] else "FAILED"]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default=",".join(SCENARIOS),
                        help=f"Comma-separated scenarios (default: all): {', '.join(SCENARIOS)}.")
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres",
                        help="The database the workers use (pg-restart needs postgres).")
    parser.add_argument("--json", metavar="PATH", help="Also write every result, with details, to PATH.")
    parser.add_argument("--keep", action="store_true", help="Keep the servers' data and the workers' logs.")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.scenario.split(",") if n.strip()]

    def progress(result: Result) -> None:
        state = "ok" if result.ok else "FAILED: " + "; ".join(p.splitlines()[0] for p in result.problems)
        print(f"{result.scenario}: {state} ({result.seconds:.0f} s)", file=sys.stderr, flush=True)

    try:
        results = run_scenarios(names, args.size, args.db, args.keep, progress)
    except ValueError as exc:
        parser.error(str(exc))
    print(table(results))
    for r in results:
        for problem in r["problems"]:
            print(f"\n{r['scenario']}: {problem}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
