"""The Redis engine: priority queues, leases, topic semaphores, all in Lua.

Redis holds ids, never payloads; :func:`jobqueue.resync.resync` rebuilds it from the
database (through :class:`TopicResync`). Nothing here imports the models.
"""

from . import flow
from .connection import ConfigurationError, get_redis, reset_clients
from .keys import TopicKeys, rollup_key, topic_keys, topics_key, workers_key
from .locks import Holder, TopicLock
from .metrics import tally
from .queue import (
    abort_requested,
    aborts_requested,
    ack,
    ack_and_pop,
    acks_and_pop,
    change_priority,
    claim_expired,
    depths,
    extend_leases,
    is_paused,
    known_topics,
    pop,
    position,
    promote_due,
    push,
    push_job,
    push_jobs,
    queue_ids,
    remove,
    request_abort,
    safe_call,
    schedule,
    send_job,
    set_paused,
    wait_and_pop,
    wait_for_push,
)
from .reconcile import reconcile_cursors, reconcile_turns, restore, save_reconcile_cursors
from .resync import ResyncReport, TopicResync, TopicRows, server_epochs, stale_topics, stamp_epochs
from .workers import beat, forget, live_workers

__all__ = [
    "ConfigurationError",
    "Holder",
    "ResyncReport",
    "TopicKeys",
    "TopicLock",
    "TopicResync",
    "TopicRows",
    "abort_requested",
    "aborts_requested",
    "ack",
    "ack_and_pop",
    "acks_and_pop",
    "beat",
    "change_priority",
    "claim_expired",
    "depths",
    "extend_leases",
    "flow",
    "forget",
    "get_redis",
    "is_paused",
    "known_topics",
    "live_workers",
    "pop",
    "position",
    "promote_due",
    "push",
    "push_job",
    "push_jobs",
    "queue_ids",
    "reconcile_cursors",
    "reconcile_turns",
    "remove",
    "request_abort",
    "reset_clients",
    "restore",
    "safe_call",
    "save_reconcile_cursors",
    "schedule",
    "send_job",
    "server_epochs",
    "set_paused",
    "stale_topics",
    "stamp_epochs",
    "tally",
    "topic_keys",
    "rollup_key",
    "topics_key",
    "wait_and_pop",
    "wait_for_push",
    "workers_key",
]
