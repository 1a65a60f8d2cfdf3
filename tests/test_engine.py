"""The Redis engine on its own: every queue operation against a real Redis, with
explicit clocks (``now_ms``) wherever time matters."""

from __future__ import annotations

import time
import uuid

import pytest
from django.conf import settings as django_settings

from jobqueue import engine
from jobqueue.engine import TopicKeys

from .workerutil import jobqueue_settings, redis_keys

T0 = 1_700_000_000_000  # an arbitrary "now" in ms


def new_ids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


# -- push and pop ---------------------------------------------------------------------


def test_pop_order_is_priority_then_fifo():
    a, b, c, d, e = new_ids(5)
    assert engine.push("t", [(a, 0, None), (b, 5, None), (c, 0, None)]) == 3
    assert engine.push("t", [(d, 5, None), (e, -100, None)]) == 2
    assert engine.queue_ids("t") == [b, d, a, c, e]
    assert engine.pop("t", count=2, now_ms=T0) == [b, d]
    assert engine.pop("t", count=10, now_ms=T0) == [a, c, e]
    assert engine.pop("t", now_ms=T0) == []


def test_extreme_priorities_keep_order_and_fifo():
    ids = new_ids(6)
    engine.push("t", [(ids[0], -100, None), (ids[1], 100, None), (ids[2], -100, None)])
    engine.push("t", [(ids[3], 100, None), (ids[4], 99, None), (ids[5], -99, None)])
    assert engine.queue_ids("t") == [ids[1], ids[3], ids[4], ids[5], ids[0], ids[2]]


def test_pushing_a_queued_id_again_keeps_its_place():
    a, b = new_ids(2)
    engine.push("t", [(a, 0, None), (b, 0, None)])
    assert engine.push("t", [(a, 0, None)]) == 0
    assert engine.queue_ids("t") == [a, b]


def test_pop_leases_until_now_plus_lease(redis_client):
    (a,) = new_ids(1)
    engine.push("t", [(a, 0, None)])
    assert engine.pop("t", lease_seconds=7, now_ms=T0) == [a]
    assert redis_client.zscore(TopicKeys("t").leases, a) == T0 + 7000
    assert engine.queue_ids("t") == []
    assert engine.depths("t") == {"queued": 0, "leased": 1, "scheduled": 0}


def test_pop_without_now_uses_the_redis_clock(redis_client):
    (a,) = new_ids(1)
    engine.push("t", [(a, 0, None)])
    server_ms = redis_client.time()[0] * 1000
    engine.pop("t", lease_seconds=60)
    deadline = redis_client.zscore(TopicKeys("t").leases, a)
    assert server_ms + 55_000 <= deadline <= server_ms + 70_000


def test_push_of_a_leased_id_requeues_it(redis_client):
    (a,) = new_ids(1)
    engine.push("t", [(a, 3, None)])
    engine.pop("t", now_ms=T0)
    assert engine.push("t", [(a, 3, None)]) == 1
    assert redis_client.zscore(TopicKeys("t").leases, a) is None
    assert engine.queue_ids("t") == [a]


def test_push_wakes_idle_workers_with_a_bounded_list(redis_client):
    engine.push("t", [(i, 0, None) for i in new_ids(200)])
    assert redis_client.llen(TopicKeys("t").wake) == 64


def test_pushed_topics_are_known():
    engine.push("alpha", [(new_ids(1)[0], 0, None)])
    engine.schedule("beta", [(new_ids(1)[0], 0, 0, None)])
    assert {"alpha", "beta"} <= set(engine.known_topics())


def test_paused_topic_pops_nothing():
    a, b = new_ids(2)
    engine.push("t", [(a, 0, None), (b, 0, None)])
    engine.set_paused("t", True)
    assert engine.is_paused("t")
    assert engine.pop("t", count=5, now_ms=T0) == []
    engine.set_paused("t", False)
    assert not engine.is_paused("t")
    assert engine.pop("t", count=5, now_ms=T0) == [a, b]


def test_push_jobs_pipelines_queued_and_scheduled_jobs_of_many_topics():
    import datetime as dt

    class Row:
        def __init__(self, topic, status, priority=0, run_after=None):
            self.pk, self.topic_id, self.status = uuid.uuid4(), topic, status
            self.priority, self.entity_id, self.run_after = priority, None, run_after

    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    rows = [Row("x", "queued"), Row("y", "queued", 9), Row("x", "scheduled", run_after=later)]
    rows.append(Row("x", "waiting"))
    engine.push_jobs(rows)
    assert engine.queue_ids("x") == [str(rows[0].pk)]
    assert engine.queue_ids("y") == [str(rows[1].pk)]
    assert engine.depths("x") == {"queued": 1, "leased": 0, "scheduled": 1}


# -- ack, leases, reaping -------------------------------------------------------------


def test_ack_drops_the_lease_the_entity_and_the_abort_flag(redis_client):
    a, b = new_ids(2)
    k = TopicKeys("t")
    engine.push("t", [(a, 0, "ent-a"), (b, 0, "ent-b")])
    engine.pop("t", count=2, now_ms=T0)
    engine.request_abort("t", a)
    assert engine.abort_requested("t", a)
    assert engine.ack("t", a, "ent-a") is True
    assert engine.ack("t", a, "ent-a") is False  # no longer leased
    assert not engine.abort_requested("t", a)
    assert redis_client.hget(k.entities, "ent-a") is None
    # An entity now mapped to another job is left alone.
    redis_client.hset(k.entities, "ent-b", "someone-else")
    assert engine.ack("t", b, "ent-b") is True
    assert redis_client.hget(k.entities, "ent-b") == b"someone-else"
    assert engine.depths("t")["leased"] == 0


def test_ack_and_pop_acknowledges_and_leases_the_next(redis_client):
    a, b, c = new_ids(3)
    engine.push("t", [(a, 0, "ea"), (b, 1, None), (c, 0, None)])
    assert engine.pop("t", now_ms=T0) == [b]
    assert engine.ack_and_pop("t", b, None, count=1, lease_seconds=5, now_ms=T0) == [a]
    k = TopicKeys("t")
    assert redis_client.zscore(k.leases, b) is None
    assert redis_client.zscore(k.leases, a) == T0 + 5000
    engine.set_paused("t", True)
    assert engine.ack_and_pop("t", a, "ea", count=3, now_ms=T0) == []  # paused: acks, pops nothing
    assert redis_client.zscore(k.leases, a) is None
    assert redis_client.hget(k.entities, "ea") is None
    assert engine.queue_ids("t") == [c]


def test_acks_and_pop_acknowledges_several_and_leases_a_batch_in_one_call(redis_client):
    a, b, c, d, e = new_ids(5)
    engine.push("t", [(a, 0, "ea"), (b, 0, None), (c, 0, None), (d, 0, None), (e, 0, None)])
    assert engine.pop("t", count=2, now_ms=T0) == [a, b]
    finished = [(a, "ea", "succeeded=1"), (b, "", "succeeded=1")]
    assert engine.acks_and_pop("t", finished, count=2, lease_seconds=5, now_ms=T0) == [c, d]
    k = TopicKeys("t")
    assert redis_client.zscore(k.leases, a) is None and redis_client.zscore(k.leases, b) is None
    assert redis_client.hget(k.entities, "ea") is None
    assert redis_client.hget(k.metrics, "succeeded") == b"2"
    assert [redis_client.zscore(k.leases, i) for i in (c, d)] == [T0 + 5000] * 2
    # A count of 0 only acknowledges.
    assert engine.acks_and_pop("t", [(c, "", ""), (d, "", "")], count=0, now_ms=T0) == []
    assert engine.depths("t") == {"queued": 1, "leased": 0, "scheduled": 0}


def test_acks_and_pop_on_a_topic_with_flow_options_acknowledges_every_job(redis_client, no_flow_options):
    a, b, c = new_ids(3)
    engine.flow.configure("t", engine.flow.FlowLimits(key_concurrency=5))
    engine.push("t", [(a, 0, None), (b, 0, None), (c, 0, None)])
    assert sorted(engine.pop("t", count=2, now_ms=T0)) == sorted([a, b])
    assert engine.acks_and_pop("t", [(a, "", "succeeded=1"), (b, "", "succeeded=1")], 3, now_ms=T0) == [c]
    assert redis_client.hget(TopicKeys("t").metrics, "succeeded") == b"2"
    assert engine.acks_and_pop("t", [(c, "", "")], 0, now_ms=T0) == []
    assert engine.depths("t") == {"queued": 0, "leased": 0, "scheduled": 0}


def test_extend_leases_reports_lost_ids(redis_client):
    a, b, gone = new_ids(3)
    engine.push("t", [(a, 0, None), (b, 0, None)])
    engine.pop("t", count=2, lease_seconds=10, now_ms=T0)
    assert engine.extend_leases("t", [a, gone], lease_seconds=30, now_ms=T0 + 5000) == [gone]
    assert redis_client.zscore(TopicKeys("t").leases, a) == T0 + 35_000
    assert redis_client.zscore(TopicKeys("t").leases, b) == T0 + 10_000
    assert engine.extend_leases("t", []) == []


def test_claim_expired_claims_each_expired_lease_once(redis_client):
    a, b, c = new_ids(3)
    engine.push("t", [(a, 0, None), (b, 0, None)])
    engine.pop("t", count=2, lease_seconds=10, now_ms=T0)
    engine.push("t", [(c, 0, None)])
    engine.pop("t", lease_seconds=60, now_ms=T0)
    assert engine.claim_expired("t", grace_seconds=20, now_ms=T0 + 9_999) == []
    assert sorted(engine.claim_expired("t", grace_seconds=20, now_ms=T0 + 10_000)) == sorted([a, b])
    # Claimed leases are extended by the grace period: a second reaper gets nothing.
    assert engine.claim_expired("t", grace_seconds=20, now_ms=T0 + 10_001) == []
    assert redis_client.zscore(TopicKeys("t").leases, a) == T0 + 30_000
    # A reaper that died mid-way only delays the job.
    assert sorted(engine.claim_expired("t", grace_seconds=20, now_ms=T0 + 30_000)) == sorted([a, b])


def test_claim_expired_respects_the_limit():
    ids = new_ids(5)
    engine.push("t", [(i, 0, None) for i in ids])
    engine.pop("t", count=5, lease_seconds=1, now_ms=T0)
    first = engine.claim_expired("t", grace_seconds=60, limit=3, now_ms=T0 + 2000)
    second = engine.claim_expired("t", grace_seconds=60, limit=3, now_ms=T0 + 2000)
    assert len(first) == 3 and len(second) == 2
    assert sorted(first + second) == sorted(ids)


# -- remove, priority, position -------------------------------------------------------


def test_remove_takes_a_job_out_of_every_structure(redis_client):
    a, b, c = new_ids(3)
    k = TopicKeys("t")
    engine.push("t", [(a, 0, "ea"), (b, 0, None)])
    engine.schedule("t", [(c, T0 / 1000 + 3600, 0, "ec")])
    assert engine.remove("t", a, "ea") is True
    assert engine.remove("t", c, "ec") is True
    assert engine.remove("t", a, "ea") is False
    assert engine.queue_ids("t") == [b]
    assert redis_client.hgetall(k.entities) == {}
    assert redis_client.hgetall(k.schedprio) == {}
    engine.pop("t", now_ms=T0)
    assert engine.remove("t", b) is False  # leased, not queued: dropped all the same
    assert engine.depths("t") == {"queued": 0, "leased": 0, "scheduled": 0}


def test_change_priority_keeps_fifo_within_the_new_priority():
    a, b, c, d = new_ids(4)
    engine.push("t", [(a, 0, None), (b, 5, None), (c, 0, None), (d, 5, None)])
    assert engine.queue_ids("t") == [b, d, a, c]
    assert engine.change_priority("t", c, 5) == c
    # c was pushed after b and before d: it lands between them, not at the end.
    assert engine.queue_ids("t") == [b, c, d, a]
    assert engine.change_priority("t", b, -1) == b
    assert engine.queue_ids("t") == [c, d, a, b]


def test_change_priority_by_entity_and_of_scheduled_jobs():
    a, b, s = new_ids(3)
    engine.push("t", [(a, 0, None), (b, 0, "eb")])
    assert engine.change_priority("t", None, 10, entity_id="eb") == b
    assert engine.queue_ids("t") == [b, a]
    assert engine.change_priority("t", None, 10, entity_id="nobody") is None
    engine.schedule("t", [(s, T0 / 1000, 0, None)])
    assert engine.change_priority("t", s, 50) == s
    assert engine.promote_due("t", now_ms=T0) == [s]
    assert engine.queue_ids("t") == [s, b, a]  # promoted with its new priority
    engine.pop("t", now_ms=T0)
    assert engine.change_priority("t", s, 1) is None  # leased: neither queued nor scheduled


def test_position():
    ids = new_ids(4)
    engine.push("t", [(ids[0], 0, None), (ids[1], 0, None), (ids[2], 9, None)])
    assert [engine.position("t", i) for i in ids] == [1, 2, 0, None]


# -- scheduling -----------------------------------------------------------------------


def test_schedule_and_promote_due(redis_client):
    early, late, queued = new_ids(3)
    k = TopicKeys("t")
    engine.push("t", [(queued, 0, None)])
    engine.schedule("t", [(early, (T0 + 1000) / 1000, 3, "e1"), (late, (T0 + 5000) / 1000, 0, None)])
    assert engine.depths("t") == {"queued": 1, "leased": 0, "scheduled": 2}
    assert redis_client.hget(k.entities, "e1") == early.encode()
    assert engine.promote_due("t", now_ms=T0 + 999) == []
    redis_client.delete(k.wake)
    assert engine.promote_due("t", now_ms=T0 + 1000) == [early]
    assert redis_client.llen(k.wake) == 1
    assert engine.queue_ids("t") == [early, queued]
    assert engine.promote_due("t", now_ms=T0 + 1000) == []
    assert engine.promote_due("t", now_ms=T0 + 60_000) == [late]
    assert engine.queue_ids("t") == [early, queued, late]
    assert redis_client.hgetall(k.schedprio) == {}


def test_schedule_takes_a_retry_out_of_the_leases(redis_client):
    (a,) = new_ids(1)
    engine.push("t", [(a, 0, None)])
    engine.pop("t", now_ms=T0)
    engine.schedule("t", [(a, (T0 + 500) / 1000, 0, None)])
    assert engine.depths("t") == {"queued": 0, "leased": 0, "scheduled": 1}
    engine.push("t", [(a, 0, None)])  # run now: no longer scheduled
    assert engine.depths("t") == {"queued": 1, "leased": 0, "scheduled": 0}
    assert redis_client.hgetall(TopicKeys("t").schedprio) == {}


def test_promote_limit():
    ids = new_ids(5)
    engine.schedule("t", [(i, T0 / 1000 - 10 + n, 0, None) for n, i in enumerate(ids)])
    assert engine.promote_due("t", limit=2, now_ms=T0) == ids[:2]
    assert engine.promote_due("t", limit=10, now_ms=T0) == ids[2:]
    assert engine.queue_ids("t") == ids


# -- restoring jobs whose push never happened -----------------------------------------


def test_restore_queues_only_what_redis_does_not_hold(redis_client):
    lost, queued, leased, in_schedule = new_ids(4)
    engine.push("t", [(leased, 0, None)])
    assert engine.pop("t", lease_seconds=60, now_ms=T0) == [leased]
    engine.push("t", [(queued, 0, None)])
    engine.schedule("t", [(in_schedule, T0 / 1000 + 3600, 0, None)])  # queued since: a run-now
    k = TopicKeys("t")
    before = redis_client.zrange(k.queue, 0, -1, withscores=True)

    items = [(i, 3, None, None) for i in (lost, queued, leased, in_schedule)]
    assert sorted(engine.restore("t", items)) == sorted([lost, in_schedule])
    assert redis_client.zscore(k.queue, queued) == before[0][1]  # its place kept
    assert redis_client.zscore(k.leases, leased) == T0 + 60000 and redis_client.zscore(k.queue, leased) is None
    assert engine.depths("t")["scheduled"] == 0 and redis_client.hget(k.schedprio, in_schedule) is None
    assert engine.queue_ids("t") == [lost, in_schedule, queued]  # priority 3 before 0, FIFO within it
    assert engine.restore("t", items) == []  # twice changes nothing


def test_restore_schedules_a_due_job_unless_redis_holds_it(redis_client):
    lost, scheduled, queued = new_ids(3)
    engine.schedule("t", [(scheduled, T0 / 1000 + 5, 7, None)])
    engine.push("t", [(queued, 0, None)])  # promoted in Redis, the row not yet updated
    due = T0 / 1000 - 1
    items = [(lost, 4, "e-lost", due), (scheduled, 4, None, due), (queued, 4, None, due)]
    assert engine.restore("t", items) == [lost]
    k = TopicKeys("t")
    assert redis_client.zscore(k.scheduled, lost) == T0 - 1000
    assert redis_client.zscore(k.scheduled, scheduled) == T0 + 5000  # untouched
    assert redis_client.hget(k.schedprio, lost) == b"4" and redis_client.hget(k.schedprio, scheduled) == b"7"
    assert redis_client.hget(k.entities, "e-lost") == lost.encode()
    assert engine.promote_due("t", now_ms=T0) == [lost]
    assert engine.queue_ids("t") == [lost, queued]  # priority 4 before 0


def test_restore_never_takes_over_an_entity_mapping(redis_client):
    old, new = new_ids(2)
    engine.push("t", [(new, 0, "e")])
    engine.pop("t", now_ms=T0)
    assert engine.restore("t", [(old, 0, "e", None)]) == [old]
    assert redis_client.hget(TopicKeys("t").entities, "e") == new.encode()
    assert engine.restore("t", []) == []


def test_restore_runs_its_script_only_for_ids_that_look_missing(monkeypatch):
    from jobqueue.engine import reconcile as engine_reconcile

    ran = []
    real = engine_reconcile.script
    monkeypatch.setattr(engine_reconcile, "script", lambda client, name: ran.append(name) or real(client, name))
    held = new_ids(2500)
    engine.push("t", [(i, 0, None) for i in held])
    assert engine.restore("t", [(i, 0, None, None) for i in held]) == []
    assert ran == []  # a read answered it: Redis was never held by a script
    (lost,) = new_ids(1)
    assert engine.restore("t", [(i, 0, None, None) for i in [*held, lost]]) == [lost]
    assert ran == ["restore"]


def test_restore_wakes_idle_workers(redis_client):
    engine.restore("t", [(i, 0, None, None) for i in new_ids(3)])
    assert redis_client.llen(TopicKeys("t").wake) == 3


def test_reconcile_turns_go_to_one_caller_per_period():
    assert engine.reconcile_turns(["a", "b"], 60) == ["a", "b"]
    assert engine.reconcile_turns(["a", "b", "c"], 60) == ["c"]
    assert engine.reconcile_turns([], 60) == []
    assert engine.reconcile_turns(["d"], 0.05) == ["d"]
    time.sleep(0.1)
    assert engine.reconcile_turns(["d"], 0.05) == ["d"]


def test_reconcile_cursors_are_kept_per_topic():
    engine.save_reconcile_cursors("a", {"head": "h", "sweep": "s"})
    assert engine.reconcile_cursors("a") == {"head": "h", "sweep": "s"}
    engine.save_reconcile_cursors("a", {"head": "h2", "sweep": None})
    assert engine.reconcile_cursors("a") == {"head": "h2"}
    assert engine.reconcile_cursors("b") == {}


# -- keys and prefixes ----------------------------------------------------------------


def test_every_key_of_a_topic_shares_one_hash_tag(redis_client):
    (a,) = new_ids(1)
    engine.push("t.x-1", [(a, 0, "e")])
    engine.pop("t.x-1", now_ms=T0)
    engine.request_abort("t.x-1", a)
    engine.reconcile_turns(["t.x-1"], 60)
    engine.save_reconcile_cursors("t.x-1", {"sweep": "0"})
    topic_keys = [key.decode() for key in redis_keys(redis_client, "*{t.x-1}*")]
    prefix = django_settings.JOBQUEUE["PREFIX"]
    assert topic_keys and all(key.startswith(f"{prefix}:{{t.x-1}}:") for key in topic_keys)
    assert set(topic_keys) <= set(TopicKeys("t.x-1").all())


def test_two_prefixes_on_one_redis_never_see_each_other(redis_client):
    a, b = new_ids(2)
    with jobqueue_settings(PREFIX="one"):
        engine.push("t", [(a, 0, "shared-entity")])
        engine.schedule("t", [(b, T0 / 1000, 0, None)])
        engine.set_paused("t", True)
    with jobqueue_settings(PREFIX="two"):
        assert engine.queue_ids("t") == []
        assert engine.depths("t") == {"queued": 0, "leased": 0, "scheduled": 0}
        assert engine.promote_due("t", now_ms=T0) == []
        assert not engine.is_paused("t")
        assert engine.pop("t", now_ms=T0) == []
        assert engine.change_priority("t", None, 5, entity_id="shared-entity") is None
        assert "t" not in engine.known_topics()
    with jobqueue_settings(PREFIX="one"):
        assert engine.queue_ids("t") == [a]
        assert engine.known_topics() == ["t"]
    assert all(key.decode().startswith(("one:", "two:")) for key in redis_keys(redis_client))


@pytest.mark.single_redis  # on a cluster the suite names Redis by REDIS_URL already
def test_redis_url_setting_overrides_the_cache_alias(redis_client):
    url = django_settings.REDIS_URL
    with jobqueue_settings(REDIS_URL=url):
        client = engine.get_redis()
        assert client is engine.get_redis()  # cached
        assert client is not redis_client
        engine.push("t", [(new_ids(1)[0], 0, None)])
    assert engine.depths("t")["queued"] == 1


@pytest.mark.parametrize("alias", ["missing", "locmem"])
def test_a_cache_alias_that_is_not_redis_is_refused(alias):
    with jobqueue_settings(CACHE_ALIAS=alias, REDIS_URL=None):
        engine.reset_clients()
        with pytest.raises(engine.ConfigurationError, match=alias):
            engine.get_redis()


def test_safe_call_logs_a_redis_outage_instead_of_raising(caplog):
    with jobqueue_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        engine.reset_clients()
        assert engine.safe_call(engine.push, "t", [(new_ids(1)[0], 0, None)]) is None
    assert "Redis unavailable" in caplog.text
