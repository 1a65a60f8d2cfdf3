"""Reliability under faults: every scenario of ``bench/faults.py`` at its small size.

The runner starts its own ``redis-server`` and PostgreSQL 15 cluster (``initdb``,
``pg_ctl``) and real ``jobworker`` processes, so it runs once per module, as a
subprocess (its Django is set up on its own servers, not on the suite's). The workers
use the database this suite runs on (``JOBQUEUE_TEST_DB``); the PostgreSQL restart
always runs on the runner's PostgreSQL. Each test then checks one scenario's counts.

The last tests feed the checks known-bad histories, so a check that could not fail
would show here.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.faultapp import analysis

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
DB = os.environ.get("JOBQUEUE_TEST_DB", "sqlite")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "results.json"
    runner = str(ROOT / "bench" / "faults.py")
    argv = [sys.executable, runner, "--size", "small", "--db", DB, "--json", str(out)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.exists(), f"the fault runner failed ({done.returncode}):\n{done.stderr[-5000:]}"
    found = {r["key"]: r for r in json.loads(out.read_text())}
    assert set(found) == {"kill9", "redis-flush", "redis-restart", "pg-restart", "contention", "transactions",
                          "slow", "enqueuer-cut", "enqueuer-kill", "bridge-kill9", "bridge-kill9-redis",
                          "redis-failover",
                          "flow-kill9", "flow-redis-flush"}
    return found


def check_common(r: dict) -> dict:
    """Counts every scenario must meet; returns the details for scenario-specific checks."""
    assert r["ok"], "\n".join(r["problems"])
    d = r["details"]
    assert r["jobs"] > 0
    assert r["lost"] == 0 and r["succeeded"] == r["jobs"]
    assert d["statuses"] == {"succeeded": r["jobs"]}
    assert d["unrecorded_attempts"] == 0
    assert d["unmarked_lost"] == 0
    assert d["ran_but_not_recorded"] == 0
    assert d["twice_not_after_kill"] == 0
    return d


def test_kill9_loses_nothing_and_marks_every_lost_attempt(results):
    r = results["kill9"]
    d = check_common(r)
    assert d["kills"] >= 2
    if r["executed_twice"]:
        assert r["twice_after_kill"] is True
    if r["lost_marked"] != "-":
        marked, cut = map(int, r["lost_marked"].split("/"))
        assert marked == cut and d["outcomes"]["lost"] >= cut
    assert d["outcomes"]["succeeded"] == r["jobs"]
    assert set(d["outcomes"]) <= {"succeeded", "lost"}
    assert d["max_concurrent_work"]["handlers"] <= 4 and d["max_concurrent_work"]["executions"] <= 4


def test_redis_flush_is_rebuilt_from_the_database(results):
    r = results["redis-flush"]
    d = check_common(r)
    assert 0 < d["finished_at_flush"] < r["jobs"]  # the flush came mid-run
    assert d["workers_that_rebuilt"] >= 1
    assert r["executed_twice"] == 0 and d["multi_execution"] == 0
    assert d["max_concurrent_serial"]["handlers"] <= 1 and d["max_concurrent_serial"]["executions"] <= 1


def test_a_cluster_failover_is_found_per_topic_and_repaired(results):
    r = results["redis-failover"]
    d = check_common(r)
    assert 0 < d["finished_at_kill"] < r["jobs"]  # the master died mid-drain
    assert d["promoted_port"] != d["killed_port"]
    assert d["tail_removed"] > 0
    assert d["workers_that_rebuilt"] >= 1
    # Only the topic of the killed master was rebuilt; the other shard kept its data.
    assert d["rebuilt_topics"] == ["serial"]
    assert r["executed_twice"] == 0 and d["multi_execution"] == 0
    assert d["max_concurrent_serial"]["handlers"] <= 1 and d["max_concurrent_serial"]["executions"] <= 1
    assert d["max_concurrent_work"]["executions"] <= 4


@pytest.mark.parametrize("key", ["flow-kill9", "flow-redis-flush"])
def test_flow_limits_hold_through_kills_and_flushes(results, key):
    r = results[key]
    d = check_common(r)
    assert d["flow"]["max_per_key"] <= 1
    assert d["flow"]["rate_excess"] < 2  # start-time jitter: see flow_limits()
    if key == "flow-kill9":
        assert d["kills"] >= 2


def test_redis_restart_keeps_jobs_enqueued_during_the_outage(results):
    r = results["redis-restart"]
    d = check_common(r)
    assert d["enqueue_errors"] == 0
    assert d["enqueued_during_outage"] == 30
    assert d["outage_seconds"] >= 3
    assert d["workers_that_saw_the_outage"] >= 1
    assert r["executed_twice"] == 0


def test_postgres_restart_leaves_no_job_stuck(results):
    r = results["pg-restart"]
    d = check_common(r)
    assert d["workers_that_saw_the_outage"] >= 1
    assert r["executed_twice"] == 0


def test_contention_respects_topic_concurrency(results):
    r = results["contention"]
    d = check_common(r)
    assert d["serial_overlaps"] == 0
    assert d["max_concurrent_serial"]["handlers"] == 1 and d["max_concurrent_serial"]["executions"] == 1
    assert 2 <= d["max_concurrent_trio"]["handlers"] <= 3 and d["max_concurrent_trio"]["executions"] <= 3
    assert d["worker_starts"] > 4  # slots changed hands as workers exited and restarted


def test_rolled_back_enqueues_never_run(results):
    r = results["transactions"]
    d = check_common(r)
    assert d["rolled_back"] >= 200
    assert (d["rolled_back_rows"], d["rolled_back_ran"], d["rolled_back_in_redis"]) == (0, 0, 0)


def test_slow_and_stubborn_handlers(results):
    r = results["slow"]
    d = check_common(r)
    assert d["slow_first_attempts_timed_out"] == "1/1"
    assert d["slow-proc_first_attempts_timed_out"] == "1/1"
    # Each ran twice: once past its timeout, then the retry.
    assert r["executed_twice"] == r["jobs"] and r["twice_after_kill"] is True
    for kind in ("stubborn_inline", "stubborn_process"):
        s = d[kind]
        # The first signal lets the job finish; the second does not wait for it forever.
        assert s["alive_after_first_sigterm"] is True
        assert s["exit_seconds"] is not None and s["exit_seconds"] <= 15
        assert s["status_after_exit"] == "queued"
        assert s["executions"] == ["aborted"]
        assert s["final"] == "succeeded"


def check_stranded(r: dict) -> dict:
    """Jobs whose push never happened ran, on the workers that were running, within the bound."""
    d = check_common(r)
    assert d["stranded"] > 0 and r["executed_twice"] == 0
    assert d["max_wait_seconds"] is not None and d["max_wait_seconds"] <= d["bound_seconds"]
    assert d["bound_seconds"] <= 2 * d["reconcile_seconds"] + 5
    assert d["workers_that_put_back"] >= 1
    assert d["worker_restarts"] == 0 and d["workers_that_rebuilt"] == 0
    return d


def test_jobs_committed_while_the_enqueuer_cannot_reach_redis_run(results):
    d = check_stranded(results["enqueuer-cut"])
    assert d["stranded"] >= 20  # every way in: alone, in a transaction, two at once, an entity, a delay


def test_jobs_of_an_enqueuer_killed_between_commit_and_push_run(results):
    d = check_stranded(results["enqueuer-kill"])
    assert d["enqueuers_killed"] == 4 and d["stranded"] >= 20


# -- the checks themselves ------------------------------------------------------------------


@pytest.mark.parametrize("key", ["bridge-kill9", "bridge-kill9-redis"])
def test_a_celery_bridge_killed_mid_stream_makes_every_message_one_job(results, key):
    r = results[key]
    d = check_common(r)
    assert d["kills"] >= 2
    assert d["rows"] == d["messages"] == r["jobs"] and d["extra_rows"] == 0
    assert 0 < d["rows_at_kills"][0] < d["messages"]  # the first kill came mid-stream
    assert r["executed_twice"] == 0
    assert not any(d["leftovers"].values())
    assert d["last_bridge"] and "refused: none" in d["last_bridge"]


def test_overlap_checks_catch_what_they_should():
    assert analysis.max_overlap([(0, 1), (1, 2), (2, 3)]) == 1  # back to back is not overlap
    assert analysis.max_overlap([(0, 2), (1, 3), (1.5, 1.6), (5, 6)]) == 3
    t = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)

    def row(start: float, end: float, outcome: str = "succeeded") -> dict:
        return {"started_at": t + dt.timedelta(seconds=start), "finished_at": t + dt.timedelta(seconds=end),
                "outcome": outcome}

    assert analysis.serial_violations([row(0, 1), row(1, 2), row(2, 3)]) == 0
    assert analysis.serial_violations([row(0, 1), row(0.5, 2), row(2, 3)]) == 1
    assert analysis.serial_violations([row(0, 10, "lost"), row(1, 2)]) == 0  # a lost one ends when noticed
    assert analysis.execution_overlap([row(0, 2), row(1, 3), row(1.5, 1.6)]) == 3


def test_run_logs_tie_calls_to_kills(tmp_path):
    (tmp_path / "runs-10.log").write_text("S a 1 10 1.0\nE a 1 10 2.0\nS b 1 10 3.0\nS c 1 1")  # cut mid-line
    (tmp_path / "runs-11.log").write_text("S b 2 11 5.0\nE b 2 11 6.0\n")
    runs = analysis.read_runs(tmp_path)
    assert sorted(runs) == ["a", "b"]
    assert [(c.attempt, c.end) for c in runs["b"]] == [(1, None), (2, 6.0)]
    assert analysis.run_intervals(runs, {10: 4.0}) == [(1.0, 2.0), (3.0, 4.0), (5.0, 6.0)]
