"""Cron topics: each period enqueued exactly once, however many workers (threads,
processes) run the scheduler; missed periods are not replayed."""

from __future__ import annotations

import calendar
import datetime as dt
import re
import subprocess
import sys
import threading

import pytest
from django.db import connections
from django.test.utils import override_settings
from hypothesis import given, settings
from hypothesis import strategies as st

from jobqueue import cron, registry
from jobqueue.cron import CronSchedule, enqueue_due, enqueue_period, next_run
from jobqueue.models import Job, Topic
from jobqueue.worker import Worker, maintenance

from .workerutil import REPO_ROOT, child_env

UTC = dt.timezone.utc
PARIS = "Europe/Paris"


def at(hour: int, minute: int, second: int = 0, day: int = 15) -> dt.datetime:
    return dt.datetime(2025, 1, day, hour, minute, second, tzinfo=UTC)


def periods(topic: str) -> list[str]:
    payloads = Job.objects.filter(topic_id=topic).values_list("payload", flat=True)
    return sorted(p["scheduled_for"] for p in payloads)


def scheduled_for(jobs: list[Job]) -> list[str]:
    return [j.payload["scheduled_for"] for j in jobs]


@pytest.fixture
def report():
    """A cron topic registered the way an app does, with its Topic row synced."""

    def make_report(job):
        return {"made_for": job.payload["scheduled_for"]}

    spec = registry.register("cron-report", make_report, cron="*/5 * * * *")
    Topic.objects.sync(spec)
    yield Topic.objects.get(name="cron-report")
    registry.unregister("cron-report")


# -- the schedule ---------------------------------------------------------------------


def test_next_after_and_previous():
    s = CronSchedule("*/15 9-17 * * 1-5")  # every quarter hour, office hours, weekdays
    friday_evening = dt.datetime(2025, 1, 17, 17, 50)
    assert s.next_after(friday_evening) == dt.datetime(2025, 1, 20, 9, 0)  # Monday
    assert s.previous(dt.datetime(2025, 1, 18, 12, 0)) == dt.datetime(2025, 1, 17, 17, 45)
    assert s.previous(dt.datetime(2025, 1, 17, 10, 30, 59)) == dt.datetime(2025, 1, 17, 10, 30)
    yearly = CronSchedule("0 0 1 1 *")
    assert yearly.next_after(dt.datetime(2025, 1, 1, 0, 0)) == dt.datetime(2026, 1, 1)
    assert yearly.previous(dt.datetime(2025, 12, 31, 23, 59)) == dt.datetime(2025, 1, 1)
    leap = CronSchedule("0 12 29 2 *")
    assert leap.next_after(dt.datetime(2025, 3, 1)) == dt.datetime(2028, 2, 29, 12, 0)
    # Valid, but the fifth Monday of a month never falls on its 1st, 9th, 17th or 25th.
    never = CronSchedule("0 0 */8 * 1#5")
    with pytest.raises(ValueError, match="never matches"):
        never.next_after(dt.datetime(2025, 1, 1))
    assert never.previous(dt.datetime(2025, 1, 1)) is None


def test_day_fields_combine_as_in_vixie_cron():
    # Both day fields restricted: either one may match (every 13th, and every Friday).
    s = CronSchedule("0 0 13 * 5")
    assert s.next_after(dt.datetime(2025, 1, 1)) == dt.datetime(2025, 1, 3)  # a Friday
    assert s.next_after(dt.datetime(2025, 1, 10)) == dt.datetime(2025, 1, 13)  # a Monday
    # A day field starting with "*", even "*/9", makes both must-match: a Friday that is
    # the 1st, 10th, 19th or 28th.
    s = CronSchedule("0 0 */9 * 5")
    assert s.next_after(dt.datetime(2025, 1, 1)) == dt.datetime(2025, 1, 10)
    assert s.next_after(dt.datetime(2025, 1, 10)) == dt.datetime(2025, 2, 28)
    assert s.previous(dt.datetime(2025, 2, 27)) == dt.datetime(2025, 1, 10)
    # A day of the month that February lacks still leaves its weekdays.
    s = CronSchedule("0 0 31 2 1-5")
    assert s.next_after(dt.datetime(2025, 1, 1)) == dt.datetime(2025, 2, 3)


def test_sunday_is_0_or_7():
    saturday_noon = dt.datetime(2025, 1, 18, 12, 0)
    sunday = dt.datetime(2025, 1, 19)
    for expression in ("0 0 * * 0", "0 0 * * 7", "0 0 * * 5-7", "0 0 * * 1/2", "0 0 * * sun"):
        assert CronSchedule(expression).next_after(saturday_noon) == sunday, expression


@pytest.mark.parametrize(
    ("expression", "gist"),
    [
        ("every day", "must have 5 fields"),
        ("*/5 * * * * *", "must have 5 fields"),
        ("61 * * * *", "minute"),
        ("* 24 * * *", "hour"),
        ("* * 0 * *", "day-of-month"),
        ("* * * 13 *", "month"),
        ("* * * * 8", "day-of-week"),
        ("*/0 * * * *", "minute"),
        ("5-1 * * * *", "minute"),
        ("0 0 30 2 *", "day-of-month"),  # could never run
        ("0 0 31 4,6,9,11 *", "day-of-month"),
    ],
)
def test_invalid_expressions_are_refused(expression, gist):
    with pytest.raises(ValueError, match=re.escape(repr(expression))) as caught:
        CronSchedule(expression)
    assert gist in str(caught.value)
    with pytest.raises(ValueError):
        registry.register("cron-invalid", lambda job: None, cron=expression)
    assert registry.get("cron-invalid") is None


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789*/-,# LW?MONsunJAN\t", max_size=30))
def test_any_text_is_a_schedule_or_a_value_error(text):
    try:
        CronSchedule(text)
    except ValueError as exc:
        assert repr(text) in str(exc)


# What each sampled field means, written out (weekday 0 = Sunday): the scan below checks
# the schedule's search against these sets, not against the parser's own reading.
MINUTES = {"*": range(60), "*/7": range(0, 60, 7), "0": [0], "5,35": [5, 35],
           "50-59": range(50, 60), "*/20": [0, 20, 40]}
HOURS = {"*": range(24), "0-5": range(6), "*/6": [0, 6, 12, 18], "23": [23], "9,13": [9, 13]}
DAYS = {"*": range(1, 32), "1": [1], "10-20": range(10, 21), "*/9": [1, 10, 19, 28], "31": [31]}
MONTHS = {"*": range(1, 13), "2": [2], "1-3": [1, 2, 3], "*/4": [1, 5, 9], "11,12": [11, 12]}
WEEKDAYS = {"*": range(7), "0": [0], "1-5": range(1, 6), "6,0": [6, 0], "3": [3], "7": [0],
            "5-7": [5, 6, 0], "1/2": [1, 3, 5, 0]}


def _both_days_must_match(parts: tuple[str, ...]) -> bool:
    return parts[2].startswith("*") or parts[4].startswith("*")


def _matches(parts: tuple[str, ...], when: dt.datetime) -> bool:
    minute, hour, day, month, weekday = parts
    day_ok = when.day in DAYS[day]
    weekday_ok = when.isoweekday() % 7 in WEEKDAYS[weekday]
    days_ok = (day_ok and weekday_ok) if _both_days_must_match(parts) else (day_ok or weekday_ok)
    return when.minute in MINUTES[minute] and when.hour in HOURS[hour] and when.month in MONTHS[month] and days_ok


def _scan(parts: tuple[str, ...], when: dt.datetime, forward: bool, minutes: int) -> dt.datetime | None:
    step = dt.timedelta(minutes=1 if forward else -1)
    c = when.replace(second=0, microsecond=0) + (step if forward else dt.timedelta(0))
    for _ in range(minutes):
        if _matches(parts, c):
            return c
        c += step
    return None


fields = st.tuples(*(st.sampled_from(list(table)) for table in (MINUTES, HOURS, DAYS, MONTHS, WEEKDAYS)))


@settings(max_examples=60, deadline=None)
@given(fields, st.datetimes(min_value=dt.datetime(2024, 1, 1), max_value=dt.datetime(2026, 12, 31)))
def test_search_agrees_with_a_minute_by_minute_scan(parts, when):
    try:
        s = CronSchedule(" ".join(parts))
    except ValueError:
        # Refused only when its days of the month must match and no month has them.
        months_days = [(m, d) for m in MONTHS[parts[3]] for d in DAYS[parts[2]] if d <= calendar.monthrange(2024, m)[1]]
        assert _both_days_must_match(parts) and months_days == []
        return
    window = 60 * 24 * 400  # a little over a year, minute by minute
    expected_next = _scan(parts, when, True, window)
    if expected_next is not None:
        assert s.next_after(when) == expected_next
    expected_previous = _scan(parts, when, False, window)
    if expected_previous is not None:
        assert s.previous(when) == expected_previous


# -- enqueueing periods -----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_each_period_is_enqueued_once(report):
    first = enqueue_period(report, now=at(12, 5, 10))
    assert first is not None and first.payload == {"scheduled_for": "2025-01-15T12:05:00+00:00"}
    assert enqueue_period(report, now=at(12, 5, 50)) is None
    assert enqueue_period(report, now=at(12, 9, 59)) is None
    assert enqueue_period(report, now=at(12, 10, 1)) is not None
    assert periods("cron-report") == ["2025-01-15T12:05:00+00:00", "2025-01-15T12:10:00+00:00"]


@pytest.mark.django_db(transaction=True)
def test_a_late_start_enqueues_only_the_most_recent_period(report):
    assert enqueue_due(now=at(12, 0, 5))
    # Every worker was down from 12:01 to 12:17: 12:05, 12:10 and 12:15 were missed.
    created = enqueue_due(now=at(12, 17, 30))
    assert scheduled_for(created) == ["2025-01-15T12:15:00+00:00"]
    assert enqueue_due(now=at(12, 18)) == []
    assert len(periods("cron-report")) == 2


@pytest.mark.django_db(transaction=True)
def test_a_new_schedule_starts_with_the_next_period(report):
    assert enqueue_due(now=at(12, 7)) == []  # 12:05 began before anyone knew the schedule
    assert scheduled_for(enqueue_due(now=at(12, 10, 2))) == ["2025-01-15T12:10:00+00:00"]
    # An edited schedule is new again: its past periods are not replayed either.
    Topic.objects.filter(pk=report.pk).update(cron="0 * * * *")
    assert enqueue_due(now=at(12, 30)) == []
    assert scheduled_for(enqueue_due(now=at(13, 0, 1))) == ["2025-01-15T13:00:00+00:00"]


@pytest.mark.django_db(transaction=True)
def test_paused_and_invalid_schedules_are_skipped(report, caplog):
    report.set_paused(True)
    assert enqueue_due(now=at(12, 5)) == []
    Topic.objects.create(name="cron-broken", cron="61 * * * *")
    report.set_paused(False)
    assert [j.topic_id for j in enqueue_due(now=at(12, 10))] == ["cron-report"]
    assert "cron-broken has an invalid cron schedule" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_schedules_follow_the_current_time_zone():
    Topic.objects.create(name="cron-paris", cron="0 9 * * *")
    with override_settings(TIME_ZONE="Europe/Paris"):
        assert enqueue_due(now=at(7, 59)) == []
        created = enqueue_due(now=at(8, 0, 20))  # 09:00:20 in Paris in January
    assert scheduled_for(created) == ["2025-01-15T09:00:00+01:00"]


@pytest.mark.django_db(transaction=True)
def test_the_repeated_hour_of_autumn(report):
    # Paris, 26 October 2025: at 01:00 UTC, 03:00 CEST becomes 02:00 CET again.
    Topic.objects.create(name="cron-nightly", cron="30 2 * * *")
    with override_settings(TIME_ZONE=PARIS):
        for minute in (0, 30, 60, 90):  # 02:00 and 02:30, first in CEST, then in CET
            enqueue_due(now=dt.datetime(2025, 10, 26, 0, 0, 10, tzinfo=UTC) + dt.timedelta(minutes=minute))
    # Every five minutes means every five real minutes, in both passes of the hour...
    assert periods("cron-report") == [
        "2025-10-26T02:00:00+01:00", "2025-10-26T02:00:00+02:00",
        "2025-10-26T02:30:00+01:00", "2025-10-26T02:30:00+02:00",
    ]
    # ...while a job at a set time runs once, in the first.
    assert periods("cron-nightly") == ["2025-10-26T02:30:00+02:00"]


@pytest.mark.django_db(transaction=True)
def test_the_skipped_hour_of_spring():
    # Paris, 30 March 2025: at 01:00 UTC, 02:00 CET becomes 03:00 CEST; 02:30 never comes.
    Topic.objects.create(name="cron-nightly", cron="30 2 * * *")
    with override_settings(TIME_ZONE=PARIS):
        before = dt.datetime(2025, 3, 30, 0, 50, tzinfo=UTC)
        assert enqueue_due(now=before) == []
        assert next_run("cron-nightly", now=before) == dt.datetime(2025, 3, 30, 1, 0, tzinfo=UTC)
        created = enqueue_due(now=dt.datetime(2025, 3, 30, 1, 0, 10, tzinfo=UTC))
        assert enqueue_due(now=dt.datetime(2025, 3, 30, 1, 30, 10, tzinfo=UTC)) == []
    # The skipped time runs as soon as the clock has jumped, as cron does.
    assert scheduled_for(created) == ["2025-03-30T03:00:00+02:00"]


@pytest.mark.django_db(transaction=True)
def test_failed_enqueue_releases_the_period_for_the_next_pass(report, monkeypatch):
    calls = []
    real = Job.objects.enqueue

    def flaky_enqueue(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("database hiccup")
        return real(*args, **kwargs)

    monkeypatch.setattr(Job.objects, "enqueue", flaky_enqueue)
    with pytest.raises(RuntimeError):
        enqueue_due(now=at(12, 5))
    assert len(enqueue_due(now=at(12, 5, 30))) == 1
    assert len(calls) == 2


@pytest.mark.django_db(transaction=True)
def test_next_run(report):
    assert next_run(report, now=at(12, 5)) == at(12, 10)
    assert next_run("cron-report", now=at(12, 59, 59)) == at(13, 0)
    assert next_run("echo") is None  # no schedule
    assert next_run("no-such-topic") is None
    Topic.objects.filter(pk=report.pk).update(cron="not a schedule")
    assert next_run("cron-report") is None


# -- many schedulers at once -----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_many_threads_enqueue_one_job_per_period(report):
    barrier = threading.Barrier(8)
    results: list[int] = []
    errors: list[BaseException] = []

    def scheduler():
        try:
            barrier.wait()
            results.append(len(enqueue_due(now=at(12, 5, 1))))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=scheduler) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == [0] * 7 + [1]
    assert periods("cron-report") == ["2025-01-15T12:05:00+00:00"]


CHILD = """
import datetime as dt, sys, time
import django
django.setup()
from jobqueue.cron import enqueue_due
start = float(sys.argv[1])
time.sleep(max(0.0, start - time.time()))  # all children call at (about) the same moment
now = dt.datetime(2025, 1, 15, 12, 5, 1, tzinfo=dt.timezone.utc)
print(len(enqueue_due(now=now)))
"""


@pytest.mark.django_db(transaction=True)
def test_many_processes_enqueue_one_job_per_period(report):
    import time

    start = str(time.time() + 3.0)
    procs = [
        subprocess.Popen([sys.executable, "-c", CHILD, start], cwd=REPO_ROOT, env=child_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outputs]
    assert sorted(int(out.strip().splitlines()[-1]) for out, _ in outputs) == [0, 0, 0, 1]
    assert periods("cron-report") == ["2025-01-15T12:05:00+00:00"]


# -- in the worker --------------------------------------------------------------------


def test_scheduler_is_a_maintenance_hook():
    assert maintenance.HOOKS.count(cron.run_scheduler) == 1


@pytest.mark.django_db(transaction=True)
def test_worker_enqueues_and_runs_the_current_period():
    def every_minute(job):
        return {"made_for": job.payload["scheduled_for"]}

    registry.register("cron-minutely", every_minute, cron="* * * * *")
    try:
        assert Worker(topics=["cron-minutely"], burst=True, install_signals=False).run() == 0
    finally:
        registry.unregister("cron-minutely")
    jobs = list(Job.objects.filter(topic_id="cron-minutely"))
    # One job for the minute the worker started (two if a minute boundary fell in the run).
    assert 1 <= len(jobs) <= 2
    assert len({j.payload["scheduled_for"] for j in jobs}) == len(jobs)
    assert {j.status for j in jobs} <= {"succeeded", "queued"}
    assert jobs[-1].status == "succeeded"
    assert jobs[-1].result == {"made_for": jobs[-1].payload["scheduled_for"]}


@pytest.mark.django_db(transaction=True)
def test_worker_schedules_only_the_topics_it_serves():
    Topic.objects.create(name="cron-unserved", cron="* * * * *")
    Worker(topics=["echo"], burst=True, install_signals=False).run()
    assert not Job.objects.filter(topic_id="cron-unserved").exists()
    assert [j.topic_id for j in enqueue_due()] == ["cron-unserved"]  # due, had it been served
