"""Flow control in the engine: rate limits (GCRA), running jobs per key, turns between keys,
against a real Redis with explicit clocks (``now_ms``)."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from jobqueue import engine
from jobqueue.engine import flow
from jobqueue.engine.flow import FlowLimits, Rate, parse_rate

T0 = 1_700_000_000_000


pytestmark = pytest.mark.usefixtures("no_flow_options")


def ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(n)]


def push_keyed(topic: str, key: str, job_ids: list[str], priority: int = 0) -> int:
    return flow.push(topic, [(i, priority, None, key) for i in job_ids])


# -- the rate string --------------------------------------------------------------------


@pytest.mark.parametrize(("text", "rate"), [
    ("100/m", Rate(100, 60.0, 1)),
    ("5/s", Rate(5, 1.0, 1)),
    ("1000/h:50", Rate(1000, 3600.0, 50)),
    ("10/30s", Rate(10, 30.0, 1)),
    (" 100 / m : 10 ", Rate(100, 60.0, 10)),
])
def test_parse_rate(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["100", "100/d", "0/s", "5/s:0", "x/m", "-1/s", "5/s:"])
def test_parse_rate_refuses(text):
    with pytest.raises(ValueError):
        parse_rate(text)


def test_no_rate_is_none():
    assert parse_rate("") is None


# -- rate limit -------------------------------------------------------------------------


def test_rate_spaces_starts_and_says_how_long_to_wait():
    flow.configure("r", FlowLimits(rate=parse_rate("10/s")))  # one start per 100 ms
    engine.push("r", [(i, 0, None) for i in ids("j", 5)])
    assert engine.pop("r", count=5, now_ms=T0) == ["j00000"]
    assert engine.pop("r", count=5, now_ms=T0 + 40) == []
    assert 0 < flow.wait_seconds("r") <= 0.06
    assert engine.pop("r", count=5, now_ms=T0 + 100) == ["j00001"]
    assert engine.pop("r", count=5, now_ms=T0 + 450) == ["j00002"]  # idle time is not saved up beyond the burst
    assert engine.pop("r", count=5, now_ms=T0 + 500) == []
    assert engine.pop("r", count=5, now_ms=T0 + 550) == ["j00003"]


def test_burst_allows_that_many_at_once_then_the_steady_rate():
    flow.configure("r", FlowLimits(rate=parse_rate("10/s:3")))
    engine.push("r", [(i, 0, None) for i in ids("j", 10)])
    assert engine.pop("r", count=10, now_ms=T0) == ids("j", 3)
    assert engine.pop("r", count=10, now_ms=T0 + 99) == []
    assert engine.pop("r", count=10, now_ms=T0 + 100) == ["j00003"]
    # After a full second of rest the bucket holds its burst again, no more.
    assert engine.pop("r", count=10, now_ms=T0 + 2000) == ["j00004", "j00005", "j00006"]


def test_no_token_is_taken_without_a_job():
    flow.configure("r", FlowLimits(rate=parse_rate("1/s")))
    assert engine.pop("r", now_ms=T0) == []
    assert flow.wait_seconds("r") == 0
    engine.push("r", [("a", 0, None), ("b", 0, None)])
    assert engine.pop("r", now_ms=T0 + 1) == ["a"]
    assert engine.pop("r", now_ms=T0 + 2) == []


def test_ack_and_pop_acknowledges_even_when_rate_limited():
    flow.configure("r", FlowLimits(rate=parse_rate("1/s")))
    engine.push("r", [("a", 0, None), ("b", 0, None)])
    assert engine.pop("r", now_ms=T0) == ["a"]
    assert engine.ack_and_pop("r", "a", now_ms=T0 + 10) == []
    assert engine.depths("r") == {"queued": 1, "leased": 0, "scheduled": 0}
    assert engine.ack_and_pop("r", "nothing", now_ms=T0 + 1000) == ["b"]


def test_the_rate_is_shared_by_every_caller_and_held_in_redis():
    flow.configure("r", FlowLimits(rate=parse_rate("2/s")))
    engine.push("r", [(i, 0, None) for i in ids("j", 4)])
    assert engine.pop("r", now_ms=T0) == ["j00000"]
    flow._limits.clear()
    flow._blocked_until.clear()  # another process: it knows nothing but the options
    flow.configure("r", FlowLimits(rate=parse_rate("2/s")))
    assert engine.pop("r", now_ms=T0 + 100) == []


def test_paused_and_slotless_pops_take_nothing():
    flow.configure("r", FlowLimits(rate=parse_rate("1/s")))
    engine.push("r", [("a", 0, None)])
    engine.set_paused("r", True)
    assert engine.pop("r", now_ms=T0) == []
    engine.set_paused("r", False)
    assert engine.pop("r", now_ms=T0, slot_token="not-held") == []
    assert engine.pop("r", now_ms=T0) == ["a"]


# -- running jobs per key -----------------------------------------------------------------


def test_key_concurrency_holds_a_key_back_and_serves_the_others():
    flow.configure("k", FlowLimits(key_concurrency=1))
    push_keyed("k", "A", ["a1", "a2"])
    push_keyed("k", "B", ["b1"])
    assert engine.pop("k", count=5, now_ms=T0) == ["a1", "b1"]
    assert engine.pop("k", count=5, now_ms=T0) == []
    assert flow.wait_seconds("k") == 0  # every waiting key is full: the end of a lease wakes the workers
    engine.ack("k", "a1")
    assert engine.pop("k", count=5, now_ms=T0) == ["a2"]


@pytest.mark.parametrize("release", ["ack", "ack_pop", "reaper", "remove"])
def test_every_end_of_a_lease_frees_its_place(release):
    flow.configure("k", FlowLimits(key_concurrency=1))
    push_keyed("k", "A", ["a1", "a2"])
    assert engine.pop("k", lease_seconds=1, now_ms=T0) == ["a1"]
    assert engine.pop("k", now_ms=T0) == []
    if release == "ack":
        engine.ack("k", "a1")
    elif release == "ack_pop":
        assert engine.ack_and_pop("k", "a1", now_ms=T0) == ["a2"]
        return
    elif release == "reaper":
        assert engine.claim_expired("k", grace_seconds=1, now_ms=T0 + 1500) == ["a1"]
        assert engine.pop("k", now_ms=T0 + 1500) == []  # claimed, not yet given up: still running
        flow.push("k", [("a1", 0, None, "A")])  # the reaper requeues it
    else:
        engine.remove("k", "a1", key="A")
    got = engine.pop("k", now_ms=T0 + 2000)
    assert got in (["a2"], ["a1"])
    assert engine.pop("k", now_ms=T0 + 2000) == []


def test_unkeyed_jobs_pass_full_keys():
    flow.configure("k", FlowLimits(key_concurrency=1))
    push_keyed("k", "A", ["a1", "a2"])
    engine.push("k", [("u1", 0, None)])
    assert engine.pop("k", count=5, now_ms=T0) == ["a1", "u1"]


# -- turns between keys -------------------------------------------------------------------


def test_keys_take_turns_within_a_priority():
    flow.configure("f", FlowLimits(fair=True))
    push_keyed("f", "A", ids("a", 1000))
    push_keyed("f", "B", ids("b", 10))
    first = [engine.pop("f", now_ms=T0)[0] for _ in range(20)]
    assert first == [x for pair in zip(ids("a", 10), ids("b", 10), strict=True) for x in pair]
    assert engine.depths("f")["queued"] == 1000 + 10 - 20


def test_priority_beats_turns_and_a_keys_own_order_holds():
    flow.configure("f", FlowLimits(fair=True))
    push_keyed("f", "A", ["a1", "a2"])
    push_keyed("f", "B", ["b1"])
    push_keyed("f", "A", ["a9"], priority=5)  # jumps ahead of A's head
    assert engine.pop("f", count=10, now_ms=T0) == ["a9", "b1", "a1", "a2"]


def test_position_counts_rounds():
    flow.configure("f", FlowLimits(fair=True))
    push_keyed("f", "A", ids("a", 5))
    push_keyed("f", "B", ids("b", 5))
    order = []
    expected = {job_id: engine.position("f", job_id) for job_id in ids("a", 5) + ids("b", 5)}
    while got := engine.pop("f", now_ms=T0):
        order.append(got[0])
    assert expected == {job_id: order.index(job_id) for job_id in order}
    assert engine.position("f", "a00000") is None


def test_removing_a_head_lets_its_key_go_on():
    flow.configure("f", FlowLimits(fair=True))
    push_keyed("f", "A", ["a1", "a2", "a3"])
    assert engine.remove("f", "a1", key="A") is True
    assert engine.remove("f", "a3", key="A") is True
    assert engine.pop("f", count=5, now_ms=T0) == ["a2"]
    assert engine.depths("f")["queued"] == 0


def test_repair_after_a_plain_remove_and_flatten():
    flow.configure("f", FlowLimits(fair=True))
    push_keyed("f", "A", ["a1", "a2", "a3"])
    push_keyed("f", "B", ["b1", "b2"])
    engine.remove("f", "a1")  # knows no keys: A's sub-queue has no head now
    assert flow.repair("f") == 1
    assert engine.queue_ids("f") == ["b1", "a2"]
    assert flow.repair("f", flatten=True) == 2
    flow.configure("f", None)
    assert engine.pop("f", count=10, now_ms=T0) == ["b1", "a2", "a3", "b2"]


def come_back(how: str, job_id: str, priority: int) -> None:
    """Queue keyed job ``job_id`` of key A of topic f by a push, a promotion or a restore."""
    if how == "push":
        assert push_keyed("f", "A", [job_id], priority) == 1
    elif how == "promote":
        engine.schedule("f", [(job_id, T0 / 1000, priority, None)], keys={job_id: "A"})
        assert engine.promote_due("f", now_ms=T0) == [job_id]
    else:
        assert engine.restore("f", [(job_id, priority, None, None)], keys={job_id: "A"}) == [job_id]


@pytest.mark.parametrize("how", ["push", "promote", "restore"])
@pytest.mark.parametrize("priority", [0, 5])
def test_a_keyed_job_queued_where_its_keys_head_left_the_queue_gives_the_key_its_best_job(how, priority):
    flow.configure("f", FlowLimits(fair=True))
    push_keyed("f", "A", ["a1", "a2", "a3"])
    engine.remove("f", "a1")  # knows no keys: A's sub-queue has no head now
    come_back(how, "a4", priority)
    if priority:  # better than every job of A waiting: it is A's job in the queue
        assert engine.queue_ids("f") == ["a4"]
        assert engine.pop("f", count=10, now_ms=T0) == ["a4", "a2", "a3"]
    else:  # A's best waiting job, pushed before it, goes first
        assert engine.queue_ids("f") == ["a2"]
        assert engine.pop("f", count=10, now_ms=T0) == ["a2", "a3", "a4"]


def test_state_shows_tokens_and_waiting_keys():
    flow.configure("s", FlowLimits(rate=parse_rate("10/s:2"), key_concurrency=1))
    push_keyed("s", "A", ["a1", "a2", "a3"])
    push_keyed("s", "B", ["b1"])
    assert flow.state("s", now_ms=T0)["tokens"] == 2
    assert engine.pop("s", count=1, now_ms=T0) == ["a1"]
    info = flow.state("s", now_ms=T0)
    assert info["rate"] == {"count": 10, "period": 1.0, "burst": 2}
    assert info["key_concurrency"] == 1
    assert info["tokens"] == 1
    assert info["keys_waiting"] == 2
    assert info["keys"] == [{"key": "A", "queued": 2, "running": 1}, {"key": "B", "queued": 1, "running": 0}]


# -- one slot --------------------------------------------------------------------------


def test_everything_a_limit_touches_is_in_the_topics_slot(redis_client):
    topic = "slot.topic"
    base = engine.topic_keys(topic).base
    seen: set[str] = set()

    def look() -> None:
        seen.update(k.decode() for k in redis_client.scan_iter(count=1000))

    flow.configure(topic, FlowLimits(rate=parse_rate("100/s:5"), key_concurrency=1))
    push_keyed(topic, "tenant-1", ["a1", "a2"])
    push_keyed(topic, "tenant:2", ["b1", "b2", "b3"])
    flow.push(topic, [("u1", 0, "ent", None)])
    engine.schedule(topic, [("s1", 1.0, 0, None)])
    look()
    engine.pop(topic, count=3, now_ms=T0)
    engine.position(topic, "a2")
    flow.state(topic, now_ms=T0)
    look()
    engine.remove(topic, "b2", key="tenant:2")
    engine.ack_and_pop(topic, "a1", now_ms=T0 + 1000)
    flow.repair(topic)
    look()
    topic_names = {n for n in seen if n.startswith(base)}
    assert {n[len(base) + 1:] for n in topic_names} >= {
        "queue", "leases", "rate", "keyheads", "keyof", "keyqueue", "keyrun",
    }
    assert seen - topic_names == {engine.topics_key()}
    assert {key_slot(n.encode()) for n in topic_names} == {key_slot(engine.topic_keys(topic).queue.encode())}


def test_changing_a_waiting_keyed_jobs_priority():
    flow.configure("f", FlowLimits(fair=True))
    push_keyed("f", "A", ["a1", "a2", "a3"])
    push_keyed("f", "B", ["b1"])
    assert engine.change_priority("f", "a3", 1, key="A") == "a3"  # beats A's first: takes its place
    assert engine.change_priority("f", "a2", -1, key="A") == "a2"
    assert engine.change_priority("f", "nothing", 5, key="A") is None
    assert engine.pop("f", count=10, now_ms=T0) == ["a3", "b1", "a1", "a2"]


# -- keyed jobs that come back: due, retried, restored -------------------------------------


@pytest.mark.parametrize("priority", [0, 5])
def test_a_due_keyed_job_goes_behind_its_key(priority):
    flow.configure("f", FlowLimits(fair=True))
    push_keyed("f", "A", ["a1", "a2"])
    engine.schedule("f", [("s1", T0 / 1000, priority, None)], keys={"s1": "A"})  # delayed, or a retry's backoff
    push_keyed("f", "B", ["b1"])
    assert engine.promote_due("f", now_ms=T0) == ["s1"]
    if priority:  # a higher priority than its key's job in the queue: takes its place, as a push would
        assert engine.queue_ids("f") == ["s1", "b1"]
        assert engine.pop("f", count=10, now_ms=T0) == ["s1", "b1", "a1", "a2"]
    else:  # it waits for its key's turn: one job of each key in the queue
        assert engine.queue_ids("f") == ["a1", "b1"]
        assert engine.pop("f", count=10, now_ms=T0) == ["a1", "b1", "a2", "s1"]


def test_a_due_keyed_job_waits_for_its_key_to_have_a_free_place():
    flow.configure("k", FlowLimits(key_concurrency=1))
    push_keyed("k", "A", ["a1"])
    engine.schedule("k", [("s1", T0 / 1000, 0, None)], keys={"s1": "A"})
    assert engine.pop("k", now_ms=T0) == ["a1"]
    assert engine.promote_due("k", now_ms=T0) == ["s1"]
    assert engine.pop("k", now_ms=T0) == []
    engine.ack("k", "a1")
    assert engine.pop("k", now_ms=T0) == ["s1"]


def test_keys_of_a_schedule_are_ignored_where_keys_take_no_turns():
    engine.schedule("plain", [("s1", T0 / 1000, 0, None)], keys={"s1": "A"})
    assert engine.get_redis().hlen(engine.topic_keys("plain").keyof) == 0
    assert engine.promote_due("plain", now_ms=T0) == ["s1"]
    assert engine.queue_ids("plain") == ["s1"]


def test_a_restored_keyed_job_goes_behind_its_key():
    flow.configure("k", FlowLimits(key_concurrency=1))
    push_keyed("k", "A", ["a1", "a2"])
    assert engine.pop("k", now_ms=T0) == ["a1"]  # A is full
    # r1 and r2 were committed as queued, r3 as scheduled, but their pushes never happened.
    restored = engine.restore("k", [("r1", 0, None, None), ("r2", 9, None, None), ("r3", 0, None, T0 / 1000),
                                    ("a2", 0, None, None)], keys={"r1": "A", "r2": "A", "r3": "A", "a2": "A"})
    assert sorted(restored) == ["r1", "r2", "r3"]  # a2, behind its key's job, is held
    assert engine.queue_ids("k") == ["r2"]  # A's best job; the others wait behind it
    assert engine.pop("k", now_ms=T0) == []  # A's place is taken: none of them runs
    assert engine.promote_due("k", now_ms=T0) == ["r3"]
    assert engine.pop("k", now_ms=T0) == []
    assert engine.restore("k", [("r1", 0, None, None), ("r3", 0, None, None)], keys={"r1": "A", "r3": "A"}) == []
    order = []
    for running in ["a1", "r2", "a2", "r1"]:
        engine.ack("k", running)
        order += engine.pop("k", count=5, now_ms=T0)
    assert order == ["r2", "a2", "r1", "r3"]


# -- waking the workers when a full key's place frees ------------------------------------


def wakes(topic: str) -> int:
    return int(engine.get_redis().llen(engine.topic_keys(topic).wake))


@pytest.mark.parametrize("release", ["ack", "ack_pop", "retry", "remove"])
def test_the_end_of_a_lease_wakes_the_workers_a_full_key_held_back(release):
    flow.configure("k", FlowLimits(key_concurrency=1))
    push_keyed("k", "A", ["a1", "a2"])
    assert engine.pop("k", now_ms=T0) == ["a1"]
    engine.get_redis().delete(engine.topic_keys("k").wake)  # the push's wakes were taken
    assert engine.pop("k", now_ms=T0) == []  # a2's key is full: the worker waits for a wake
    assert flow.wait_seconds("k") == 0 and wakes("k") == 0
    if release == "ack":
        engine.ack("k", "a1")
    elif release == "ack_pop":
        assert engine.ack_and_pop("k", "other", now_ms=T0) == []  # no lease ended: no place freed
        assert wakes("k") == 0
        assert engine.ack_and_pop("k", "a1", now_ms=T0) == ["a2"]  # it takes the place itself, and
        assert wakes("k") == 1  # wakes the others all the same (another key's job may wait too)
        return
    elif release == "retry":
        engine.schedule("k", [("a1", T0 / 1000 + 60, 0, None)], keys={"a1": "A"})
    else:
        engine.remove("k", "a1", key="A")
    assert wakes("k") == 1
    assert engine.pop("k", now_ms=T0) == ["a2"]


def test_no_wake_when_no_key_held_a_job_back():
    flow.configure("k", FlowLimits(key_concurrency=1))
    push_keyed("k", "A", ["a1"])
    push_keyed("k", "B", ["b1"])
    assert engine.pop("k", count=2, now_ms=T0) == ["a1", "b1"]
    engine.get_redis().delete(engine.topic_keys("k").wake)
    engine.ack("k", "a1")
    push_keyed("k", "A", ["a2", "a3"])
    engine.get_redis().delete(engine.topic_keys("k").wake)
    assert engine.pop("k", now_ms=T0) == ["a2"]
    assert engine.pop("k", now_ms=T0) == []  # a3 held back: A's next end of a lease wakes
    engine.ack("k", "b1")  # B's: no place a held-back job needs, yet the flag is topic-wide
    engine.ack("k", "a2")
    assert engine.pop("k", now_ms=T0) == ["a3"]
    assert engine.pop("k", now_ms=T0) == []  # nothing held back any more: the flag is gone
    engine.get_redis().delete(engine.topic_keys("k").wake)
    engine.ack("k", "a3")
    assert wakes("k") == 0
