"""Topic semaphores: never more than N holders, expired slots reclaimed, forced unlock."""

from __future__ import annotations

import os
import threading

import pytest

from jobqueue.engine import TopicKeys, TopicLock

T0 = 1_700_000_000_000


def test_one_slot_is_the_classic_topic_lock():
    first, second = TopicLock("t", token="w1"), TopicLock("t", token="w2")
    assert first.acquire(limit=1, ttl=30, now_ms=T0)
    assert not second.acquire(limit=1, ttl=30, now_ms=T0)
    assert first.acquire(limit=1, ttl=30, now_ms=T0 + 1)  # the owner may acquire again (a renewal)
    assert first.release()
    assert not first.release()
    assert second.acquire(limit=1, ttl=30, now_ms=T0)


def test_n_slots_admit_n_owners():
    locks = [TopicLock("t", token=f"w{n}") for n in range(4)]
    assert [lock.acquire(limit=3, ttl=30, now_ms=T0) for lock in locks] == [True, True, True, False]
    assert sorted(h.token for h in TopicLock.holders("t", now_ms=T0)) == ["w0", "w1", "w2"]
    locks[1].release()
    assert locks[3].acquire(limit=3, ttl=30, now_ms=T0)


def test_holders_report_who_and_until_when():
    lock = TopicLock("t", token="tok-1", worker_id="host:123")
    lock.acquire(limit=1, ttl=12, now_ms=T0)
    (holder,) = TopicLock.holders("t", now_ms=T0)
    assert holder.token == "tok-1"
    assert holder.worker_id == "host:123"
    assert holder.info["pid"] == os.getpid()
    assert holder.expires_at == (T0 + 12_000) / 1000


def test_an_expired_slot_is_reclaimed(redis_client):
    crashed, newcomer = TopicLock("t", token="crashed"), TopicLock("t", token="newcomer")
    assert crashed.acquire(limit=1, ttl=5, now_ms=T0)
    assert not newcomer.acquire(limit=1, ttl=5, now_ms=T0 + 4_999)
    assert newcomer.acquire(limit=1, ttl=5, now_ms=T0 + 5_000)
    assert [h.token for h in TopicLock.holders("t", now_ms=T0 + 5_000)] == ["newcomer"]
    # The crashed owner's info went with its slot.
    assert redis_client.hkeys(TopicKeys("t").holders) == [b"newcomer"]


def test_renew_extends_a_live_slot_and_fails_for_an_expired_one():
    lock = TopicLock("t", token="w1")
    assert lock.acquire(limit=1, ttl=5, now_ms=T0)
    assert lock.renew(ttl=5, now_ms=T0 + 4_000)
    assert lock.renew(ttl=5, now_ms=T0 + 8_000)  # deadline was pushed to T0 + 9s
    assert not lock.renew(ttl=5, now_ms=T0 + 13_000)
    assert TopicLock.holders("t", now_ms=T0) == []  # the dead slot is not revived
    assert not TopicLock("t", token="never").renew(ttl=5, now_ms=T0)


def test_renew_of_a_slot_taken_over_fails():
    old, new = TopicLock("t", token="old"), TopicLock("t", token="new")
    old.acquire(limit=1, ttl=1, now_ms=T0)
    new.acquire(limit=1, ttl=60, now_ms=T0 + 2_000)
    assert not old.renew(ttl=60, now_ms=T0 + 2_001)
    assert [h.token for h in TopicLock.holders("t", now_ms=T0 + 2_001)] == ["new"]


def test_force_release_frees_every_slot_and_returns_the_holders():
    for n in range(3):
        assert TopicLock("t", token=f"w{n}", worker_id=f"worker-{n}").acquire(limit=3, ttl=30)
    freed = TopicLock.force_release("t")
    assert sorted(h.worker_id for h in freed) == ["worker-0", "worker-1", "worker-2"]
    assert TopicLock.holders("t") == []
    assert TopicLock.force_release("t") == []
    assert TopicLock("t", token="next").acquire(limit=1)


@pytest.mark.parametrize("token", ["", None])
def test_an_empty_token_is_refused_because_it_would_free_every_slot(token):
    assert TopicLock("t", token="w1").acquire(limit=1)
    with pytest.raises(ValueError, match="non-empty token"):
        TopicLock("t", token=token)
    assert [h.token for h in TopicLock.holders("t")] == ["w1"]


def test_topics_have_separate_semaphores():
    assert TopicLock("a", token="w1").acquire(limit=1)
    assert TopicLock("b", token="w2").acquire(limit=1)
    assert not TopicLock("a", token="w2").acquire(limit=1)


def test_never_more_than_n_holders_under_contention():
    limit, threads, rounds = 3, 10, 40
    guard = threading.Lock()
    state = {"inside": 0, "max_inside": 0, "max_holders": 0, "acquired": 0}
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def hammer(n: int) -> None:
        lock = TopicLock("contended", token=f"worker-{n}")
        try:
            barrier.wait(timeout=30)
            for _ in range(rounds):
                if not lock.acquire(limit=limit, ttl=60):
                    continue
                with guard:
                    state["inside"] += 1
                    state["acquired"] += 1
                    state["max_inside"] = max(state["max_inside"], state["inside"])
                holders = len(TopicLock.holders("contended"))
                with guard:
                    state["max_holders"] = max(state["max_holders"], holders)
                    state["inside"] -= 1
                assert lock.release()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    workers = [threading.Thread(target=hammer, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not errors
    assert state["max_inside"] <= limit
    assert state["max_holders"] <= limit
    # The contention was real: slots were taken many times and at times all at once.
    assert state["acquired"] > rounds
    assert state["max_holders"] >= 2
    assert TopicLock.holders("contended") == []
