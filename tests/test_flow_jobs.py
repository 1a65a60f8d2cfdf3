"""Flow control through the models and the worker: job keys, topic options from handlers,
settings and the admin, resync after a Redis flush, and workers honouring the limits."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.utils import timezone

from jobqueue import engine, registry
from jobqueue.engine import flow
from jobqueue.exceptions import InvalidJob
from jobqueue.models import Execution, Job, JobStatus, Topic
from jobqueue.resync import resync
from jobqueue.topic_manager import clear_topic_cache

from .workerutil import jobqueue_settings, run_worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_flow_options")]


def set_options(topic: str, **values) -> Topic:
    row = Topic.objects.resolve(topic)
    Topic.objects.filter(pk=row.pk).update(**values)
    clear_topic_cache()
    return Topic.objects.get(pk=row.pk)


def test_enqueue_stores_the_key_and_refuses_a_bad_one():
    job = Job.objects.enqueue("echo", {"n": 1}, key="tenant-42")
    assert Job.objects.get(pk=job.pk).key == "tenant-42"
    assert Job.objects.enqueue("echo", {}, key=7).key == "7"
    for bad in ("two words", "x" * 101, ["list"], "tab\tbed"):
        with pytest.raises(InvalidJob):
            Job.objects.enqueue("echo", {}, key=bad)


def test_key_from_takes_the_key_from_the_payload():
    set_options("echo", key_from="tenant", fair=True)
    assert Job.objects.enqueue("echo", {"tenant": "acme"}).key == "acme"
    assert Job.objects.enqueue("echo", {"tenant": "acme"}, key="own").key == "own"
    assert Job.objects.enqueue("echo", {"other": 1}).key is None


def test_enqueue_many_takes_each_plain_item_s_key_from_its_payload():
    set_options("echo", key_from="tenant", fair=True)
    items = [("echo", {"tenant": f"t{n % 2}"}) for n in range(4)] + [("echo", {"other": 1}), ("echo", None)]
    jobs = Job.objects.enqueue_many(items)
    assert [job.key for job in jobs] == ["t0", "t1", "t0", "t1", None, None]
    assert list(Job.objects.filter(pk__in=[j.pk for j in jobs]).order_by("queued_at").values_list("key", flat=True)) \
        == ["t0", "t1", "t0", "t1", None, None]
    with pytest.raises(InvalidJob):
        Job.objects.enqueue_many([("echo", {"tenant": "two words"})])
    assert Job.objects.count() == 6


def test_handler_options_are_checked():
    def func(job):
        return None

    try:
        with pytest.raises(ValueError):
            registry.register("flow.bad-rate", func, rate="100 a minute")
        with pytest.raises(InvalidJob):
            registry.register("flow.bad-kc", func, key_concurrency=0)
        spec = registry.register("flow.good", func, rate="100/m:10", key_concurrency=2, key_from="tenant")
        topic = Topic.objects.sync(spec)
        assert (topic.rate, topic.key_concurrency, topic.key_from) == ("100/m:10", 2, "tenant")
        assert topic.flow_limits() == flow.FlowLimits(flow.Rate(100, 60.0, 10), 2, False)
    finally:
        for name in ("flow.bad-rate", "flow.bad-kc", "flow.good"):
            registry.unregister(name)


def test_settings_override_the_handler_and_the_admin_overrides_settings():
    def func(job):
        return None

    try:
        spec = registry.register("flow.set", func, rate="10/s")
        with jobqueue_settings(TOPIC_OPTIONS={"flow.set": {"rate": "5/s", "key_concurrency": 3}}):
            topic = Topic.objects.sync(spec)
            assert (topic.rate, topic.key_concurrency) == ("5/s", 3)
            Topic.objects.filter(pk=topic.pk).update(rate="1/s", operator_overrides=["rate"])
            topic = Topic.objects.sync(spec)
            assert (topic.rate, topic.key_concurrency) == ("1/s", 3)
        with jobqueue_settings(TOPIC_OPTIONS={"flow.set": {"nonsense": 1}}), pytest.raises(ValueError):
            Topic.objects.sync(spec)
    finally:
        registry.unregister("flow.set")


def test_a_topic_refuses_a_bad_rate():
    topic = Topic.objects.resolve("echo")
    topic.rate = "fast"
    with pytest.raises(ValidationError):
        topic.clean()
    topic.rate = "3/h:2"
    topic.clean()


def test_keyed_jobs_wait_behind_their_key_and_cancel_cleanly():
    set_options("echo", key_concurrency=1)
    a = [Job.objects.enqueue("echo", {"n": n}, key="A") for n in range(3)]
    b = Job.objects.enqueue("echo", {"n": 9}, key="B")
    assert engine.queue_ids("echo") == [str(a[0].pk), str(b.pk)]
    assert engine.depths("echo")["queued"] == 4
    assert a[1].position_in_queue == 2  # A's head at 0, then one round of two keys
    a[1].cancel()
    assert engine.depths("echo")["queued"] == 3
    a[0].cancel()
    assert engine.queue_ids("echo") == [str(b.pk), str(a[2].pk)]
    status = Job.objects.queue_status("echo")
    assert status["redis"]["queued"] == 2
    assert status["flow"]["key_concurrency"] == 1
    assert {k["key"] for k in status["flow"]["keys"]} == {"A", "B"}


def test_after_a_flush_resync_restores_turns_and_running_counts(redis_client):
    set_options("echo", key_concurrency=1)
    a = [Job.objects.enqueue("echo", {"n": n}, key="A") for n in range(3)]
    b = [Job.objects.enqueue("echo", {"n": n}, key="B") for n in range(2)]
    assert engine.pop("echo") == [str(a[0].pk)]
    Job.objects.filter(pk=a[0].pk).update(status=JobStatus.RUNNING)
    redis_client.flushdb()
    report = resync(["echo"])
    assert report.pushed["echo"] == 4 and report.leases["echo"] == 1
    assert engine.depths("echo")["queued"] == 4
    # A's job still runs: its key is full after the flush too; B goes on.
    assert engine.pop("echo", count=5) == [str(b[0].pk)]
    assert engine.pop("echo", count=5) == []
    resync(["echo"])  # nothing to do: nothing pushed twice
    assert engine.depths("echo")["queued"] == 3


def test_after_a_flush_a_rate_limited_topic_lets_no_second_burst_through(redis_client):
    topic = set_options("echo", rate="1/h:3")  # three at once, then one an hour
    flow.configure("echo", topic.flow_limits())
    for n in range(6):
        Job.objects.enqueue("echo", {"n": n})
    burst = engine.pop("echo", count=6)
    assert len(burst) == 3  # the burst, on Redis's clock; their attempts start (as a claim records it)
    Job.objects.filter(pk__in=burst).update(status=JobStatus.RUNNING, started_at=timezone.now())
    redis_client.flushdb()  # Redis forgets that the bucket was spent
    resync(["echo"])
    assert engine.depths("echo") == {"queued": 3, "leased": 3, "scheduled": 0}
    assert engine.pop("echo", count=6) == []  # the starts the database recorded still count
    assert flow.wait_seconds("echo") > 3000
    resync(["echo"])  # the bucket's state is there now: left as it is
    assert engine.pop("echo", count=6) == []


def test_after_a_flush_a_rate_limited_topic_that_started_nothing_lately_is_not_held_back(redis_client):
    topic = set_options("echo", rate="1/h:3")
    flow.configure("echo", topic.flow_limits())
    for n in range(4):
        Job.objects.enqueue("echo", {"n": n})
    redis_client.flushdb()
    resync(["echo"])
    assert len(engine.pop("echo", count=6)) == 3


def test_a_worker_takes_keys_in_turn(monkeypatch):
    set_options("echo", fair=True)
    Job.objects.enqueue_many([{"topic": "echo", "payload": {"n": n}, "key": "big"} for n in range(30)])
    small = [Job.objects.enqueue("echo", {"n": n}, key="small") for n in range(3)]
    run_worker("echo")
    assert Job.objects.filter(topic_id="echo", status=JobStatus.SUCCEEDED).count() == 33
    order = list(Execution.objects.filter(job__topic_id="echo").order_by("started_at", "pk")
                 .values_list("job_id", flat=True))
    assert max(order.index(job.pk) for job in small) < 8


def test_a_rate_limited_worker_waits_instead_of_polling(monkeypatch):
    set_options("echo", rate="50/s")
    for n in range(8):
        Job.objects.enqueue("echo", {"n": n})
    calls = []
    real_pop = flow.pop

    def counted(*args, **kwargs):
        calls.append(1)
        return real_pop(*args, **kwargs)

    monkeypatch.setattr(flow, "pop", counted)
    run_worker("echo")
    assert Job.objects.filter(topic_id="echo", status=JobStatus.SUCCEEDED).count() == 8
    assert len(calls) < 40  # each wait is slept through: about one call per token, not a spin


def test_admin_api_and_dashboard_show_the_limits(admin_client):
    topic = set_options("echo", rate="10/s:4", key_concurrency=2)
    for n in range(3):
        Job.objects.enqueue("echo", {"n": n}, key="tenant-a")
    Job.objects.enqueue("echo", {"n": 9}, key="tenant-b")
    flow.configure("echo", topic.flow_limits())
    assert engine.pop("echo", count=2) != []
    page = admin_client.get(f"/admin/jobqueue/topic/{topic.pk}/change/").content.decode()
    assert "rate 10/s:4" in page and "of 4 tokens left" in page and "at most 2 running per key" in page
    assert "tenant-a" in page and "key(s) waiting" in page
    dashboard = admin_client.get("/admin/jobqueue/job/dashboard/fragment/").content.decode()
    assert "rate 10/s:4" in dashboard
    body = admin_client.get("/jobs/api/stats/echo").json()
    assert body["flow"]["rate"] == {"count": 10, "period": 1.0, "burst": 4}
    assert 0 <= body["flow"]["tokens"] <= 4
    assert body["flow"]["key_concurrency"] == 2
    assert {k["key"]: k["running"] for k in body["flow"]["keys"]}["tenant-a"] == 1


def test_enqueue_many_keeps_keys_also_when_copying():
    set_options("echo", fair=True)
    jobs = Job.objects.enqueue_many([{"topic": "echo", "payload": {"n": n}, "key": f"k{n % 3}"} for n in range(120)])
    assert dict(Job.objects.filter(topic_id="echo").values_list("key").annotate(n=Count("pk"))) == {
        "k0": 40, "k1": 40, "k2": 40,
    }
    assert len(engine.queue_ids("echo")) == 3  # one job of each key in the queue, the rest behind
    assert engine.depths("echo")["queued"] == len(jobs)


def test_a_rate_limited_topic_is_left_alone_while_the_others_are_served():
    from jobqueue.worker import Worker

    set_options("echo", rate="1/h")
    echo = [Job.objects.enqueue("echo", {"n": n}) for n in range(2)]
    other = [Job.objects.enqueue("other", {"n": n}) for n in range(2)]
    worker = Worker(topics=["echo", "other"], install_signals=False)
    worker.topics = ["echo", "other"]
    try:
        worker._take_slots()
        fetched = [worker._fetch() for _ in range(4)]
    finally:
        from jobqueue.worker.slots import release_slots

        release_slots(worker.slots)
    assert fetched[:3] == [(str(echo[0].pk), "echo"), (str(other[0].pk), "other"), (str(other[1].pk), "other")]
    assert fetched[3] == (None, "")
    assert 3500 < flow.wait_seconds("echo") <= 3600  # the next token is an hour away: echo is not asked


@pytest.mark.parametrize("how", ["cancel", "delete"])
def test_bulk_cancel_and_delete_take_keyed_jobs_from_behind_their_key(how):
    from jobqueue.admin import bulk

    set_options("echo", fair=True)
    a = [Job.objects.enqueue("echo", {"n": n}, key="A") for n in range(3)]
    b = Job.objects.enqueue("echo", {"n": 9}, key="B")
    gone = Job.objects.filter(pk__in=[a[1].pk, a[2].pk])
    result = bulk.cancel(gone) if how == "cancel" else bulk.delete(gone)
    assert result.changed == 2
    assert flow.waiting_behind_keys("echo") == {}
    assert engine.depths("echo")["queued"] == 2
    keyof = engine.get_redis().hkeys(engine.topic_keys("echo").keyof)
    assert sorted(k.decode() for k in keyof) == sorted([str(a[0].pk), str(b.pk)])
    # The head goes too: its key's next job would take its place, and A has none left.
    head = Job.objects.filter(pk=a[0].pk)
    assert (bulk.cancel(head) if how == "cancel" else bulk.delete(head)).changed == 1
    assert engine.queue_ids("echo") == [str(b.pk)]
    assert flow.state("echo")["keys_waiting"] == 1


@pytest.mark.parametrize("flush", [False, True])
def test_resync_repairs_the_priority_of_a_job_waiting_behind_its_key(redis_client, flush):
    set_options("echo", fair=True)
    a = [Job.objects.enqueue("echo", {"n": n}, key="A") for n in range(3)]
    b = Job.objects.enqueue("echo", {"n": 9}, key="B")
    # Priority changes that reached the database but not Redis: one behind A's head, one of A's head.
    Job.objects.filter(pk=a[2].pk).update(priority=5)
    Job.objects.filter(pk=a[0].pk).update(priority=-5)
    if flush:
        redis_client.flushdb()
    report = resync(["echo"])
    if not flush:
        assert report.reprioritised["echo"] == 2
    assert engine.queue_ids("echo") == [str(a[2].pk), str(b.pk)]  # a2 beats A's old head: now A's head
    behind = {job_id: priority for job_id, (_key, priority) in flow.waiting_behind("echo").items()}
    assert behind == {str(a[0].pk): -5, str(a[1].pk): 0}
    assert engine.pop("echo", count=4) == [str(a[2].pk), str(b.pk), str(a[1].pk), str(a[0].pk)]
    assert resync(["echo"]).reprioritised == {}


def test_a_retried_keyed_job_goes_behind_its_key_when_due():
    set_options("flaky", fair=True)
    first = Job.objects.enqueue("flaky", {"succeed_on": 2}, key="A")
    run_worker("flaky", max_jobs=1)
    first.refresh_from_db()
    assert first.status == JobStatus.SCHEDULED  # its retry waits for its backoff
    a = [Job.objects.enqueue("flaky", {"succeed_on": 1}, key="A") for _ in range(2)]
    b = Job.objects.enqueue("flaky", {"succeed_on": 1}, key="B")
    later = int((timezone.now().timestamp() + 60) * 1000)
    assert engine.promote_due("flaky", now_ms=later) == [str(first.pk)]
    assert engine.queue_ids("flaky") == [str(a[0].pk), str(b.pk)]  # one job of each key: the retry is behind A's
    assert flow.waiting_behind_keys("flaky") == {str(a[1].pk): "A", str(first.pk): "A"}


def test_reconciliation_puts_a_lost_keyed_push_back_behind_its_key():
    from jobqueue.worker.reconcile import ReconcileReport, reconcile_topic

    set_options("echo", key_concurrency=1)
    running = Job.objects.enqueue("echo", {"n": 0}, key="A")
    assert engine.pop("echo") == [str(running.pk)]  # A's one place is taken
    lost = Job.objects.enqueue("echo", {"n": 1}, key="A")
    due = Job.objects.enqueue("echo", {"n": 2}, key="A", run_after=timezone.now() + timezone.timedelta(seconds=1))
    for job in (lost, due):  # committed, but their pushes never reached Redis
        engine.remove("echo", str(job.pk), key="A")
    report = ReconcileReport()
    reconcile_topic("echo", timezone.now() + timezone.timedelta(hours=1), report)
    assert report.pushed == {"echo": 1} and report.scheduled == {"echo": 1}
    assert engine.pop("echo", count=5) == []  # back behind A, whose place is still taken
    engine.ack("echo", str(running.pk))
    assert engine.pop("echo", count=5) == [str(lost.pk)]
    later = int((timezone.now().timestamp() + 60) * 1000)
    assert engine.promote_due("echo", now_ms=later) == [str(due.pk)]
    assert engine.pop("echo", count=5) == []  # the due one too waits for A


def test_a_worker_whose_keys_are_full_waits_for_a_wake_instead_of_polling(monkeypatch):
    import time

    from jobqueue.worker import Worker
    from jobqueue.worker import worker as worker_module
    from jobqueue.worker.slots import release_slots

    set_options("echo", key_concurrency=1)
    running = Job.objects.enqueue("echo", {"n": 0}, key="A")
    Job.objects.enqueue("echo", {"n": 1}, key="A")
    assert engine.pop("echo") == [str(running.pk)]  # another worker runs A's job
    waits, sleeps = [], []
    monkeypatch.setattr(engine, "wait_for_push", lambda topics, timeout: waits.append((topics, timeout)))
    monkeypatch.setattr(time, "sleep", sleeps.append)
    worker = Worker(topics=["echo"], install_signals=False)
    worker.topics = ["echo"]
    try:
        worker._take_slots()
        assert worker._fetch() == (None, "")
        worker._wait()
    finally:
        release_slots(worker.slots)
    assert sleeps == []
    assert [topics for topics, _timeout in waits] == [["echo"]]  # blocks on the wake list, as for a push
    assert 0 < waits[0][1] <= worker_module.IDLE_WAIT_SECONDS  # a bounded fallback
    engine.get_redis().delete(engine.topic_keys("echo").wake)
    engine.ack("echo", str(running.pk))  # the other worker's job ends: the wake it waits for
    assert engine.get_redis().llen(engine.topic_keys("echo").wake) == 1
