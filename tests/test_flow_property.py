"""The flow-control Lua (``flow_pop``, ``push_flow``, ``flow_remove``, and the keyed paths
of ``schedule``, ``promote`` and ``restore``) against what it promises, driven by random
operations with an explicit clock.

The model keeps which jobs are queued (with priority and key), scheduled, leased and
finished, and the GCRA state of the rate limit. After every step: the jobs Redis holds are
the model's, every key has at most one job in the queue (the others wait behind it, also
those that were scheduled or put back), no key runs more jobs than its limit, every pop
took as many jobs as the limits allowed and each the highest priority among the jobs it
could take, and no window of time saw more starts than the burst plus the rate over that
window.
"""

from __future__ import annotations

import math
import uuid

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from jobqueue import engine
from jobqueue.engine import TopicKeys, flow, get_redis
from jobqueue.engine.flow import FlowLimits, Rate

T0 = 1_700_000_000_000
priorities = st.sampled_from([-5, 0, 0, 0, 3])
job_keys = st.sampled_from(["A", "B", "C", None])


class FlowMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.topic = f"flowprop-{uuid.uuid4().hex[:12]}"
        self.queued: dict[str, tuple[int, str | None]] = {}  # id -> (priority, key)
        self.leased: dict[str, tuple[int, str | None]] = {}
        self.scheduled: dict[str, tuple[int, str | None, int]] = {}  # id -> (priority, key, due ms)
        self.lease_deadline: dict[str, int] = {}
        self.starts: list[int] = []  # the time of every start, in order
        self.now = T0
        self.minted = 0
        self.limits: FlowLimits | None = None
        self.tat = 0.0

    def new_id(self) -> str:
        self.minted += 1
        return f"job-{self.minted:06d}"

    @rule(count=st.integers(1, 20), period=st.sampled_from([1.0, 60.0]), burst=st.integers(1, 4),
          key_limit=st.one_of(st.none(), st.integers(1, 3)))
    @precondition(lambda self: self.limits is None)
    def configure(self, count, period, burst, key_limit):
        self.limits = FlowLimits(rate=Rate(count, period, burst), key_concurrency=key_limit, fair=True)
        flow.configure(self.topic, self.limits)

    @precondition(lambda self: self.limits is not None and len(self.queued) < 120)
    @rule(batch=st.lists(st.tuples(priorities, job_keys), min_size=1, max_size=6))
    def push(self, batch):
        items = [(self.new_id(), p, None, k) for p, k in batch]
        assert flow.push(self.topic, items) == len(items)
        self.queued.update({i: (p, k) for i, p, _, k in items})

    @precondition(lambda self: self.limits is not None and len(self.scheduled) < 40)
    @rule(batch=st.lists(st.tuples(priorities, job_keys, st.sampled_from([0, 100, 5000])), min_size=1, max_size=4))
    def schedule(self, batch):
        """Delayed jobs and retries: due later, then behind their key."""
        items = [(self.new_id(), p, k, self.now + delay) for p, k, delay in batch]
        engine.schedule(self.topic, [(i, due / 1000, p, None) for i, p, _k, due in items],
                        keys={i: k for i, _p, k, _d in items if k is not None})
        self.scheduled.update({i: (p, k, due) for i, p, k, due in items})

    @precondition(lambda self: self.scheduled)
    @rule()
    def promote(self):
        due = sorted(i for i, (_p, _k, at) in self.scheduled.items() if at <= self.now)
        assert sorted(engine.promote_due(self.topic, now_ms=self.now)) == due
        for job_id in due:
            p, k, _at = self.scheduled.pop(job_id)
            self.queued[job_id] = (p, k)

    @precondition(lambda self: self.limits is not None and len(self.queued) < 120)
    @rule(batch=st.lists(st.tuples(priorities, job_keys), min_size=1, max_size=4))
    def restore(self, batch):
        """Jobs whose push never happened, put back by reconciliation (with one already held)."""
        items = [(self.new_id(), p, k) for p, k in batch]
        held = sorted(self.queued)[:1]
        keys = {i: k for i, _p, k in items if k is not None}
        keys.update({i: k for i in held if (k := self.queued[i][1]) is not None})
        restored = engine.restore(self.topic, [(i, p, None, None) for i, p, _k in items]
                                  + [(i, self.queued[i][0], None, None) for i in held], keys=keys)
        assert sorted(restored) == sorted(i for i, _p, _k in items)
        self.queued.update({i: (p, k) for i, p, k in items})

    def running(self, key: str) -> int:
        return sum(1 for _p, k in self.leased.values() if k == key)

    def takeable(self) -> list[tuple[int, str | None]]:
        """What the limits allow of the queued jobs, ignoring the rate: per key, no more
        than the places left."""
        assert self.limits is not None
        limit = self.limits.key_concurrency
        free: dict[str, int] = {}
        out = []
        for p, k in sorted(self.queued.values(), key=lambda pk: -pk[0]):
            if k is not None and limit is not None:
                left = free.setdefault(k, limit - self.running(k))
                if left <= 0:
                    continue
                free[k] = left - 1
            out.append((p, k))
        return out

    @precondition(lambda self: self.limits is not None)
    @rule(count=st.integers(1, 4), lease=st.integers(1, 30))
    def pop(self, count, lease):
        assert self.limits is not None and self.limits.rate is not None
        interval = self.limits.rate.interval_ms
        tau = (self.limits.rate.burst - 1) * interval
        tat = max(self.tat, self.now)
        tokens = 0 if tat - self.now > tau else math.floor((tau - (tat - self.now)) / interval) + 1
        takeable = self.takeable()
        got = engine.pop(self.topic, count=count, lease_seconds=lease, now_ms=self.now)
        assert len(got) == min(count, tokens, len(takeable))
        best_first = sorted(p for p, _k in takeable)[::-1]
        assert sorted((self.queued[i][0] for i in got), reverse=True) == best_first[: len(got)]
        if tokens == 0:
            assert self.topic in flow._blocked_until  # told to wait (not read from the clock: no flakiness)
        for job_id in got:
            self.leased[job_id] = self.queued.pop(job_id)
            self.lease_deadline[job_id] = self.now + lease * 1000
            self.starts.append(self.now)
        if got:
            self.tat = tat + len(got) * interval

    @precondition(lambda self: self.leased)
    @rule(data=st.data())
    def ack(self, data):
        job_id = data.draw(st.sampled_from(sorted(self.leased)))
        assert engine.ack(self.topic, job_id)
        del self.leased[job_id]
        del self.lease_deadline[job_id]

    @precondition(lambda self: self.queued)
    @rule(data=st.data())
    def cancel(self, data):
        job_id = data.draw(st.sampled_from(sorted(self.queued)))
        _p, key = self.queued.pop(job_id)
        assert engine.remove(self.topic, job_id, key=key) is True

    @precondition(lambda self: self.queued)
    @rule(data=st.data(), priority=priorities)
    def change_priority(self, data, priority):
        job_id = data.draw(st.sampled_from(sorted(self.queued)))
        _p, key = self.queued[job_id]
        assert engine.change_priority(self.topic, job_id, priority, key=key) == job_id
        self.queued[job_id] = (priority, key)

    @precondition(lambda self: self.leased)
    @rule()
    def reap(self):
        """The reaper requeues every expired lease: the job goes back behind its key."""
        claimed = engine.claim_expired(self.topic, grace_seconds=1, limit=100, now_ms=self.now)
        assert sorted(claimed) == sorted(i for i, d in self.lease_deadline.items() if d <= self.now)
        items = [(i, self.leased[i][0], None, self.leased[i][1]) for i in claimed]
        if items:
            assert flow.push(self.topic, items) == len(items)
        for job_id in claimed:
            self.queued[job_id] = self.leased.pop(job_id)
            del self.lease_deadline[job_id]

    @rule(ms=st.sampled_from([0, 1, 50, 99, 100, 1000, 31_000]))
    def advance_clock(self, ms):
        self.now += ms

    # -- what must always hold ------------------------------------------------------------

    @invariant()
    def redis_holds_the_models_jobs(self):
        keys = TopicKeys(self.topic)
        leased = {i.decode() for i in get_redis().zrange(keys.leases, 0, -1)}
        assert leased == set(self.leased)
        assert engine.depths(self.topic)["queued"] == len(self.queued)
        behind = set(flow.waiting_behind_keys(self.topic))
        assert behind | set(engine.queue_ids(self.topic)) == set(self.queued)
        assert not behind & set(engine.queue_ids(self.topic))
        assert engine.depths(self.topic)["scheduled"] == len(self.scheduled)

    @invariant()
    def each_key_has_one_job_in_the_queue(self):
        in_queue = [self.queued[i][1] for i in engine.queue_ids(self.topic)]
        keyed = [k for k in in_queue if k is not None]
        assert len(keyed) == len(set(keyed))

    @invariant()
    def no_key_runs_more_than_its_limit(self):
        if self.limits is not None and self.limits.key_concurrency is not None:
            for key in ("A", "B", "C"):
                assert self.running(key) <= self.limits.key_concurrency

    @invariant()
    def no_window_has_more_starts_than_the_bucket(self):
        if self.limits is None or self.limits.rate is None or not self.starts:
            return
        interval, burst = self.limits.rate.interval_ms, self.limits.rate.burst
        last = self.starts[-1]
        for i, t in enumerate(self.starts):  # windows ending at the latest start
            assert len(self.starts) - i <= burst + (last - t) / interval + 1e-9

    def teardown(self):
        get_redis().delete(*TopicKeys(self.topic).all())
        flow.configure(self.topic, None)


FlowMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
TestFlowLua = FlowMachine.TestCase
