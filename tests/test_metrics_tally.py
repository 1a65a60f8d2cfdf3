"""The metrics tally: finished rows are added up once, so that rebuilding a lost metrics
hash reads only what finished since (through indexes), whatever the size of the tables."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext

from jobqueue import engine
from jobqueue import resync as resync_module
from jobqueue.engine import metrics
from jobqueue.models import Execution, Job, MetricsTally
from jobqueue.resync import ROLLUP_LAG, counted, resync, roll_up
from jobqueue.tally import JOBS_FIELD
from jobqueue.worker import maintenance
from tests.workerutil import run_worker

pytestmark = pytest.mark.django_db(transaction=True)

TOPICS = ["flaky", "echo"]
#: Long enough ago that a roll-up takes them.
AGO = ROLLUP_LAG * 3


def backdate(delta: dt.timedelta = AGO) -> None:
    """Move every time stamp back by ``delta`` (waits and run times stay as they were),
    and the watermark of the worker's own roll-up with them: rows never go back past it."""
    MetricsTally.objects.filter(topic="").update(until=F("until") - delta)
    Job.objects.update(
        created_at=F("created_at") - delta,
        queued_at=F("queued_at") - delta,
        started_at=F("started_at") - delta,
        finished_at=F("finished_at") - delta,
    )
    Execution.objects.update(started_at=F("started_at") - delta, finished_at=F("finished_at") - delta)


def history() -> None:
    """Some of everything: successes, retries, a failure, a dependent, a lost attempt."""
    Job.objects.enqueue("flaky", {"succeed_on": 2})
    Job.objects.enqueue("flaky", {"succeed_on": 9})
    first = Job.objects.enqueue("flaky", {"succeed_on": 1})
    Job.objects.enqueue("flaky", {"succeed_on": 1}, depends_on=[first])
    Job.objects.enqueue("echo")
    run_worker("flaky", "echo")


def same(a: dict[str, dict[str, int]], b: dict[str, dict[str, int]]) -> None:
    """Equal, but for the sums in microseconds, rounded once per window."""
    for topic in set(a) | set(b):
        x, y = a.get(topic, {}), b.get(topic, {})
        assert {k: v for k, v in x.items() if v and not k.endswith(":us")} == {
            k: v for k, v in y.items() if v and not k.endswith(":us")
        }, topic
        for name in {k for k in (*x, *y) if k.endswith(":us")}:
            assert x.get(name, 0) == pytest.approx(y.get(name, 0), abs=5), (topic, name)


def test_a_roll_up_changes_nothing_a_rebuild_gives():
    history()
    backdate()
    Job.objects.enqueue("echo")  # recent: stays after the watermark
    before = counted(TOPICS)
    assert before["flaky"]["succeeded"] == 3 and before["echo"]["enqueued"] == 2

    assert roll_up() is False  # caught up
    tally = {row.topic: row for row in MetricsTally.objects.all()}
    assert tally[""].until is not None
    assert tally["flaky"].counts["succeeded"] == 3 and tally["echo"].counts["enqueued"] == 1
    same(counted(TOPICS), before)


def test_rolled_up_rows_are_not_read_again_and_a_purge_keeps_their_counts(redis_client):
    history()
    backdate()
    before = counted(TOPICS)
    roll_up()
    Job.objects.all().delete()  # purged: the counters stay, as counters do; the jobs are gone
    after = counted(TOPICS)
    assert not any(n for fields in after.values() for name, n in fields.items() if name.startswith(JOBS_FIELD))
    same({t: {k: v for k, v in f.items() if not k.startswith(JOBS_FIELD)} for t, f in after.items()},
         {t: {k: v for k, v in f.items() if not k.startswith(JOBS_FIELD)} for t, f in before.items()})

    redis_client.flushdb()
    assert resync(TOPICS).metrics == TOPICS
    reading = metrics.read(TOPICS)
    assert reading["flaky"].counters == {"enqueued": 4, "succeeded": 3, "failed": 1, "retried": 3, "lost": 0}
    assert reading["flaky"].histograms["run"].count == 7  # 2 + 3 + 1 + 1 attempts, none left in the table


def test_rows_within_the_lag_wait_for_a_later_roll_up():
    history()
    before = counted(TOPICS)
    roll_up()
    assert set(MetricsTally.objects.values_list("topic", flat=True)) == {""}  # nothing old enough
    same(counted(TOPICS), before)
    later = dt.datetime.now(dt.UTC) + AGO
    roll_up(now=later)
    assert MetricsTally.objects.get(topic="flaky").counts["succeeded"] == 3
    same(counted(TOPICS), before)


def test_each_roll_up_reads_a_bounded_number_of_rows():
    Job.objects.enqueue_many([("echo", {"n": n}) for n in range(7)])
    run_worker("echo")
    MetricsTally.objects.all().delete()  # as rows from before the tally
    # Apart in time, so that two rows never share a time stamp.
    for n, pk in enumerate(Job.objects.order_by("created_at").values_list("pk", flat=True)):
        shift = AGO + dt.timedelta(seconds=100 - n)
        Job.objects.filter(pk=pk).update(
            created_at=F("created_at") - shift,
            queued_at=F("queued_at") - shift,
            started_at=F("started_at") - shift,
            finished_at=F("finished_at") - shift,
        )
        Execution.objects.filter(job_id=pk).update(
            started_at=F("started_at") - shift, finished_at=F("finished_at") - shift
        )
    before = counted(["echo"])
    calls = 1
    while roll_up(rows=2):
        calls += 1
        assert MetricsTally.objects.get(topic="echo").counts["enqueued"] <= 2 * calls
    assert calls == 4  # 2 + 2 + 2 + 1 rows of each kind
    same(counted(["echo"]), before)


def test_two_workers_rolling_up_at_once_add_a_window_once(monkeypatch):
    history()
    backdate()
    before = counted(TOPICS)
    aggregate = resync_module._aggregate
    raced = []

    def first_another_worker(lower, upper, names):
        window = aggregate(lower, upper, names)
        if not raced:
            raced.append(True)
            assert roll_up() is False  # the other worker moves the watermark first
        return window

    monkeypatch.setattr(resync_module, "_aggregate", first_another_worker)
    assert roll_up() is False  # its compare-and-set fails: nothing added twice
    monkeypatch.undo()
    same(counted(TOPICS), before)
    assert MetricsTally.objects.get(topic="flaky").counts["succeeded"] == 3


def test_a_worker_rolls_up_in_its_maintenance():
    history()
    assert MetricsTally.objects.get(topic="").until is not None


#: What an index condition may bound a read by: a time stamp the watermark bounds, the
#: running status, or one row's key (a join's lookup).
BOUNDED = ("finished_at", "created_at", "'running'", "(id =", "(job_id =", ".id =")


def unbounded_reads(sql: str, bounded: tuple[str, ...] = BOUNDED) -> list[str]:
    """The reads of the jobs or executions table in ``sql``'s plan that no bounded index
    condition limits: a sequential scan, or an index read over a whole topic.

    On PostgreSQL, sequential scans, hash joins and merge joins are made as costly as they
    can be (on tables this small the planner would take them, where at millions of rows it
    looks up the few rows since the watermark), so that a plan still reading a table whole
    has no bounded way. SQLite's planner has no such switches and, on tables this small,
    reads a whole index to group by it: there only a scan of the table itself counts."""
    tables = ("jobqueue_job", "jobqueue_execution")
    out = []
    with connection.cursor() as cursor:
        if connection.vendor != "postgresql":
            cursor.execute("EXPLAIN QUERY PLAN " + sql)
            return [
                line
                for line in (str(row[-1]) for row in cursor.fetchall())
                if any(line.startswith(f"SCAN {t}") for t in tables) and " USING " not in line
            ]
        switches = ("enable_seqscan", "enable_hashjoin", "enable_mergejoin")
        for switch in switches:
            cursor.execute(f"SET {switch} = off")
        try:
            cursor.execute("EXPLAIN (FORMAT JSON) " + sql)
            plan = cursor.fetchone()[0]
        finally:
            for switch in switches:
                cursor.execute(f"RESET {switch}")
    if isinstance(plan, str):
        plan = json.loads(plan)

    def conditions(node: dict) -> list[str]:
        found = [node["Index Cond"]] if "Index Cond" in node else []
        for child in node.get("Plans", []):
            if "Relation Name" not in child:
                found += conditions(child)
        return found

    def walk(node: dict) -> None:
        if node.get("Relation Name") in tables:
            conds = conditions(node)
            if node["Node Type"] == "Seq Scan" or not conds or not all(any(b in c for b in bounded) for c in conds):
                out.append(f"{node['Node Type']} on {node['Relation Name']} ({node.get('Index Name')}): {conds}")
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return out


def topic_wide_reads(sql: str) -> list[str]:
    """SQLite's reads of the jobs table by topic alone (every row of a topic)."""
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN QUERY PLAN " + sql)
        return [
            line
            for line in (str(row[-1]) for row in cursor.fetchall())
            if "jobqueue_job " in line + " " and "(topic=?)" in line
        ]


def statements(queries: CaptureQueriesContext) -> list[str]:
    return [
        q["sql"] for q in queries.captured_queries if "jobqueue_job" in q["sql"] or "jobqueue_execution" in q["sql"]
    ]


def a_long_history(rows: int = 20_000) -> None:
    """On PostgreSQL, many jobs and executions that finished long ago, and fresh statistics:
    the planner then weighs the tables as it does at millions of rows (on a few rows any
    index does)."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH made AS (
                INSERT INTO jobqueue_job (id, status, priority, payload, error, progress, progress_message, stage,
                                          has_dependents, attempts, max_attempts, timeout, worker_id, created_at,
                                          updated_at, queued_at, started_at, finished_at, topic)
                SELECT gen_random_uuid(), 'succeeded', 0, '{}', '', 100, '', '', false, 1, 3, 3600, 'old',
                       t, t, t, t, t, 'echo'
                FROM (SELECT '2020-01-01'::timestamptz - make_interval(secs => i) AS t
                      FROM generate_series(1, %s) AS i) AS g
                RETURNING id, finished_at
            )
            INSERT INTO jobqueue_execution (attempt, worker_id, hostname, pid, started_at, finished_at, outcome,
                                            stdout, stderr, error, traceback, duration, job_id, error_class)
            SELECT 1, 'old', 'old', 1, finished_at, finished_at, 'succeeded', '', '', '', '', 0.001, id, ''
            FROM made
            """,
            [rows],
        )
        cursor.execute("ANALYZE jobqueue_job, jobqueue_execution")


def test_a_rebuild_after_the_watermark_reads_the_tables_through_indexes():
    history()
    backdate()
    roll_up()
    a_long_history()
    with CaptureQueriesContext(connection) as queries:
        counted(TOPICS)
    sql = statements(queries)
    assert len(sql) == 3
    for statement in sql:
        assert not unbounded_reads(statement), statement


def test_a_roll_up_reads_the_tables_through_indexes():
    history()
    backdate()
    roll_up()  # a watermark to start from
    backdate()
    a_long_history()
    with CaptureQueriesContext(connection) as queries:
        roll_up()
    sql = statements(queries)
    assert len(sql) == 8  # five edges, three aggregates
    for statement in sql:
        assert not unbounded_reads(statement), statement


def test_the_plan_check_sees_a_read_of_every_row_of_a_topic():
    """Without a watermark the rebuild reads every row of the topics: the check says so."""
    history()
    with CaptureQueriesContext(connection) as queries:
        resync_module._aggregate(None, None, TOPICS)
    sql = statements(queries)
    assert len(sql) == 3
    if connection.vendor == "postgresql":
        assert all(unbounded_reads(statement) for statement in sql)
    else:
        assert all(topic_wide_reads(statement) for statement in sql)


def test_the_watermark_stays_before_a_transaction_still_open():
    """A row stamped before the watermark but committed after it would never be counted: on
    PostgreSQL the watermark stays a lag before the oldest open transaction of another client."""
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    if connection.vendor != "postgresql":
        roll_up(now=later)  # one writer at a time: only the lag
        assert MetricsTally.objects.get(topic="").until == later - ROLLUP_LAG
        return
    other = connection.get_new_connection(connection.get_connection_params())
    try:
        other.autocommit = False
        with other.cursor() as cursor:
            cursor.execute("SELECT now()")  # the transaction begins
            began = cursor.fetchone()[0]
        roll_up(now=later)
        assert MetricsTally.objects.get(topic="").until == began - ROLLUP_LAG
    finally:
        other.close()
    roll_up(now=later)
    assert MetricsTally.objects.get(topic="").until == later - ROLLUP_LAG


def test_one_worker_at_a_time_rolls_up_and_gives_the_turn_back_while_more_is_left(redis_client, monkeypatch):
    assert maintenance.roll_up_metrics(30) is False  # caught up: the turn is kept for the period
    assert redis_client.pttl(engine.rollup_key()) > 25_000
    with CaptureQueriesContext(connection) as queries:
        assert maintenance.roll_up_metrics(30) is False  # another worker's turn: nothing read
    assert queries.captured_queries == []

    redis_client.delete(engine.rollup_key())
    monkeypatch.setattr(maintenance, "roll_up", lambda: True)  # more left to add
    assert maintenance.roll_up_metrics(30) is True
    assert not redis_client.exists(engine.rollup_key())  # the next pass, any worker's, goes on
