"""The Redis side of the transitions, told only once the database change commits.

The database is the truth: if Redis cannot be reached, the change stands and the
workers' reconcile pass (or ``jobs resync``) repairs Redis.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import redis
from django.db import router, transaction

from .. import engine
from ..models import Job, Topic

logger = logging.getLogger("jobqueue")

#: What one chunk of a bulk transition asks of Redis, as a function of a pipeline.
Calls = Callable[[Any], None]


def after_commit(func: Callable[..., Any], *args: Any) -> None:
    """``func(*args)`` once the current transaction commits (now, in autocommit)."""
    transaction.on_commit(functools.partial(engine.safe_call, func, *args), using=router.db_for_write(Job))


def configure_flow(topics: Sequence[str]) -> None:
    """Give the engine the flow options of ``topics`` (whose keyed jobs are about to be
    pushed), as a process that never enqueued to them has not seen them."""
    for topic in Topic.objects.filter(name__in=set(topics)):
        engine.flow.configure(topic.name, topic.flow_limits())


def push(job: Job) -> None:
    if job.key:
        configure_flow([job.topic_id])
    after_commit(engine.push_job, job)


def remove(job: Job) -> None:
    after_commit(engine.remove, job.topic_id, str(job.pk), job.entity_id, None, job.key)


def pipeline_after_commit(calls: Calls) -> None:
    """Run ``calls(pipe)`` on one Redis pipeline after the current transaction commits."""

    def run() -> None:
        try:
            with engine.get_redis().pipeline(transaction=False) as pipe:
                calls(pipe)
                pipe.execute()
        except redis.RedisError as exc:
            logger.warning("Redis unavailable after a bulk change (%s); `jobs resync` repairs it.", exc)

    transaction.on_commit(run, using=router.db_for_write(Job))


def removals(items: Sequence[tuple[str, Any, str | None, str | None]]) -> Calls:
    """Drop ``(topic, job id, entity id, job key)`` items from Redis: a keyed job leaves its
    key's sub-queue too, and its key's next job takes its place (``flow_remove.lua``)."""

    def calls(pipe: Any) -> None:
        for topic, pk, entity, key in items:
            engine.remove(topic, str(pk), entity, client=pipe, key=key)

    return calls


def abort_requests(rows: Sequence[tuple[Any, ...]]) -> Calls:
    def calls(pipe: Any) -> None:
        for pk, topic in rows:
            engine.request_abort(topic, str(pk), client=pipe)

    return calls


def pushes(rows: Sequence[tuple[Any, ...]]) -> Calls:
    by_topic: dict[str, list[tuple[str, int, str | None]]] = {}
    for pk, topic, priority, entity in rows:
        by_topic.setdefault(topic, []).append((str(pk), priority, entity))
    keys = dict(Job.objects.filter(pk__in=[r[0] for r in rows], key__isnull=False).values_list("pk", "key"))
    keyed: dict[str, list[tuple[str, int, str | None, str | None]]] = {}
    if keys:
        configure_flow([r[1] for r in rows if r[0] in keys])
        for pk, topic, priority, entity in rows:
            if pk in keys and engine.flow.takes_turns(topic):
                keyed.setdefault(topic, []).append((str(pk), priority, entity, keys[pk]))
        for topic, kitems in keyed.items():
            taken = {item[0] for item in kitems}
            by_topic[topic] = [item for item in by_topic[topic] if item[0] not in taken]

    def calls(pipe: Any) -> None:
        for topic, items in by_topic.items():
            if items:
                engine.push(topic, items, client=pipe)
        for topic, kitems in keyed.items():
            engine.flow.push(topic, kitems, client=pipe)

    return calls


def priority_changes(rows: Sequence[tuple[Any, ...]], priority: int) -> Calls:
    keys = dict(Job.objects.filter(pk__in=[r[0] for r in rows], key__isnull=False).values_list("pk", "key"))

    def calls(pipe: Any) -> None:
        for pk, topic in rows:
            engine.change_priority(topic, str(pk), priority, client=pipe, key=keys.get(pk))

    return calls
