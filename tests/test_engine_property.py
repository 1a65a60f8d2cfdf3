"""The Lua queue against a plain-Python model of it, driven by random operations.

The model: a queue ordered by priority (highest first) then push order, and a
table of leases (id -> deadline in ms). Time only moves when a rule says so, and
every script gets that time through ``now_ms``.
"""

from __future__ import annotations

import uuid

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, precondition, rule

from jobqueue import engine
from jobqueue.engine import TopicKeys, get_redis

T0 = 1_700_000_000_000
priorities = st.integers(min_value=-100, max_value=100)


class QueueModel:
    def __init__(self) -> None:
        self.queue: dict[str, tuple[int, int]] = {}  # id -> (priority, push sequence)
        self.leases: dict[str, int] = {}  # id -> deadline (ms)
        self.seq = 0

    def order(self) -> list[str]:
        return sorted(self.queue, key=lambda i: (-self.queue[i][0], self.queue[i][1]))

    def push(self, job_id: str, priority: int) -> int:
        self.leases.pop(job_id, None)
        if job_id in self.queue:
            return 0
        self.seq += 1
        self.queue[job_id] = (priority, self.seq)
        return 1

    def pop(self, count: int, deadline: int) -> list[str]:
        taken = self.order()[:count]
        for job_id in taken:
            del self.queue[job_id]
            self.leases[job_id] = deadline
        return taken


class LuaQueueMachine(RuleBasedStateMachine):
    jobs = Bundle("jobs")

    def __init__(self) -> None:
        super().__init__()
        self.topic = f"prop-{uuid.uuid4().hex[:12]}"
        self.model = QueueModel()
        self.priority: dict[str, int] = {}  # the priority each id was last pushed with
        self.now = T0
        self.minted = 0

    def new_id(self) -> str:
        """Ids in a fixed order, so a replayed example does exactly the same thing."""
        self.minted += 1
        return f"job-{self.minted:06d}"

    # -- operations ---------------------------------------------------------------------

    @rule(target=jobs, priority=priorities)
    def push_new(self, priority):
        job_id = self.new_id()
        assert engine.push(self.topic, [(job_id, priority, None)]) == self.model.push(job_id, priority)
        self.priority[job_id] = priority
        return job_id

    @rule(batch=st.lists(priorities, min_size=2, max_size=6))
    def push_batch(self, batch):
        items = [(self.new_id(), p, None) for p in batch]
        expected = sum(self.model.push(job_id, p) for job_id, p, _ in items)
        assert engine.push(self.topic, items) == expected
        self.priority.update({job_id: p for job_id, p, _ in items})

    @rule(job_id=jobs)
    def push_again(self, job_id):
        """Requeue: an id already queued keeps its place, a leased or removed one goes to the back."""
        priority = self.priority[job_id]
        assert engine.push(self.topic, [(job_id, priority, None)]) == self.model.push(job_id, priority)

    @rule(count=st.integers(min_value=1, max_value=5), lease=st.integers(min_value=1, max_value=30))
    def pop(self, count, lease):
        got = engine.pop(self.topic, count=count, lease_seconds=lease, now_ms=self.now)
        assert got == self.model.pop(count, self.now + lease * 1000)

    @rule(job_id=jobs)
    def ack(self, job_id):
        assert engine.ack(self.topic, job_id) == (self.model.leases.pop(job_id, None) is not None)

    @rule(job_id=consumes(jobs))
    def cancel(self, job_id):
        was_queued = self.model.queue.pop(job_id, None) is not None
        self.model.leases.pop(job_id, None)
        assert engine.remove(self.topic, job_id) == was_queued

    @rule(job_id=jobs, priority=priorities)
    def change_priority(self, job_id, priority):
        changed = engine.change_priority(self.topic, job_id, priority)
        if job_id in self.model.queue:
            assert changed == job_id
            self.model.queue[job_id] = (priority, self.model.queue[job_id][1])
            self.priority[job_id] = priority
        else:
            assert changed is None

    @rule(ms=st.integers(min_value=0, max_value=40_000))
    def advance_clock(self, ms):
        self.now += ms

    @precondition(lambda self: self.model.leases)
    @rule(data=st.data(), lease=st.integers(min_value=1, max_value=30))
    def heartbeat(self, data, lease):
        held = sorted(self.model.leases)
        ids = data.draw(st.lists(st.sampled_from(held), unique=True, max_size=4))
        gone = "never-leased"
        lost = engine.extend_leases(self.topic, [*ids, gone], lease_seconds=lease, now_ms=self.now)
        assert lost == [gone]
        for job_id in ids:
            self.model.leases[job_id] = self.now + lease * 1000

    @rule(grace=st.integers(min_value=1, max_value=30), limit=st.integers(min_value=1, max_value=4))
    def reap(self, grace, limit):
        """Claim expired leases the way the reaper does, then requeue what was claimed."""
        expired = sorted((d, i) for i, d in self.model.leases.items() if d <= self.now)
        expected = [i for _, i in expired[:limit]]
        claimed = engine.claim_expired(self.topic, grace_seconds=grace, limit=limit, now_ms=self.now)
        assert claimed == expected
        for job_id in claimed:
            self.model.leases[job_id] = self.now + grace * 1000
        # Nothing is claimed twice while the grace period runs.
        again = engine.claim_expired(self.topic, grace_seconds=grace, limit=limit, now_ms=self.now)
        assert not set(again) & set(claimed)
        for job_id in again:
            self.model.leases[job_id] = self.now + grace * 1000
        items = [(job_id, self.priority[job_id], None) for job_id in claimed]
        expected_added = sum(self.model.push(job_id, p) for job_id, p, _ in items)
        assert engine.push(self.topic, items) == expected_added

    @rule(job_id=jobs)
    def position(self, job_id):
        order = self.model.order()
        expected = order.index(job_id) if job_id in self.model.queue else None
        assert engine.position(self.topic, job_id) == expected

    # -- what must always hold ------------------------------------------------------------

    @invariant()
    def queue_matches_the_model(self):
        assert engine.queue_ids(self.topic) == self.model.order()

    @invariant()
    def leases_match_the_model(self):
        raw = get_redis().zrange(TopicKeys(self.topic).leases, 0, -1, withscores=True)
        assert {k.decode(): int(v) for k, v in raw} == self.model.leases

    @invariant()
    def no_id_is_both_queued_and_leased(self):
        assert not set(self.model.queue) & set(self.model.leases)

    def teardown(self):
        get_redis().delete(*TopicKeys(self.topic).all())


LuaQueueMachine.TestCase.settings = settings(max_examples=50, stateful_step_count=40, deadline=None)
TestLuaQueue = LuaQueueMachine.TestCase
