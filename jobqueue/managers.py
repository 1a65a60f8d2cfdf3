"""Query layer: how jobs and topics are created, found and counted.

``JobManager.enqueue()`` writes the row in the caller's transaction and pushes
the id to Redis only once that transaction commits, so a rollback leaves
nothing behind and a commit is never broken by Redis being down.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import operator
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, connections, models, router, transaction
from django.db.models import Count, signals
from django.db.models.base import ModelState
from django.utils import timezone

from . import engine, tracing
from .constants import SHELL_TOPIC
from .exceptions import DuplicateJob, InvalidJob, InvalidTransition
from .ids import new_job_id
from .shell import check_enqueue as check_shell_enqueue
from .states import ACTIVE_STATUSES, FINISHED_STATUSES, PENDING_STATUSES, QUEUED_TEXT, JobStatus
from .validation import (
    encode_payload,
    resolve_run_after,
    validate_entity_id,
    validate_job_key,
    validate_positive_int,
    validate_priority,
)

if TYPE_CHECKING:
    from .models import Job, Topic

#: From this many rows, enqueue_many() inserts with COPY on PostgreSQL.
COPY_THRESHOLD = 100


#: The columns ``enqueue()`` sets on every new job (from the topic, its arguments and the clock).
ENQUEUE_SETS = frozenset({
    "id", "topic_id", "status", "priority", "payload", "max_attempts", "timeout", "created_at", "updated_at",
    "queued_at",
})


def fresh_job_defaults(model: type[models.Model]) -> dict[str, Any]:
    """What a new job holds in every column enqueue() does not always set, unless an
    argument says otherwise (``entity_id``, ``parent``, ``run_after``): the model's defaults."""
    return model_defaults(model, ENQUEUE_SETS)


def model_defaults(model: type[models.Model], set_by_caller: frozenset[str]) -> dict[str, Any]:
    """Each concrete field's default, by attname, but for those in ``set_by_caller``
    (which must include every field whose default is callable: the result is cached)."""
    return {f.attname: f.get_default() for f in model._meta.concrete_fields if f.attname not in set_by_caller}


@functools.cache
def _fresh(model: type[models.Model]) -> dict[str, Any]:
    return fresh_job_defaults(model)


@functools.cache
def _create() -> Any:
    """:mod:`jobqueue.transitions.create` (the transitions sit above the models)."""
    from .transitions import create

    return create


@functools.cache
def _related_model(model: type[models.Model], name: str) -> Any:
    return model._meta.get_field(name).related_model


@functools.cache
def _attnames(model: type[models.Model]) -> list[str]:
    return [f.attname for f in model._meta.concrete_fields]


def build_instance(model: Any, values: dict[str, Any], db: str | None = None) -> Any:
    """An instance of ``model`` holding ``values`` (one per concrete field's attname): a
    new one, or with ``db`` one loaded from that database (as ``Model.from_db`` makes it).

    What ``Model.__init__`` does, without its per-field ``setattr`` through the
    descriptors (most of the Python time of an enqueue after the validation, and of a
    worker's claim): none of the descriptors of ``Job`` or ``Execution`` does anything on
    an instance that has nothing cached yet. With a ``pre_init``/``post_init`` receiver
    for the model, ``__init__`` runs as usual so they are called.
    """
    if (((signals.pre_init.receivers or signals.post_init.receivers)  # (none at all: not asked per model)
            and (signals.pre_init.has_listeners(model) or signals.post_init.has_listeners(model)))
            or len(values) != len(_attnames(model))):  # (a missing value raises KeyError there)
        # Positional construction skips Model.__init__'s keyword and default handling.
        obj = model(*[values[name] for name in _attnames(model)])
    else:
        obj = model.__new__(model)
        obj._state = ModelState()
        obj.__dict__.update(values)
    if db is not None:
        obj._state.adding = False
        obj._state.db = db
    return obj


class JobQuerySet(models.QuerySet["Job"]):
    def active(self) -> JobQuerySet:
        return self.filter(status__in=ACTIVE_STATUSES)

    def pending(self) -> JobQuerySet:
        return self.filter(status__in=PENDING_STATUSES)

    def finished(self) -> JobQuerySet:
        return self.filter(status__in=FINISHED_STATUSES)

    def queued(self) -> JobQuerySet:
        return self.filter(status="queued")

    def running(self) -> JobQuerySet:
        return self.filter(status="running")

    def in_queue_order(self) -> JobQuerySet:
        """Queued jobs in the order workers take them: priority, then time queued."""
        return self.order_by("-priority", "queued_at", "id")

    def delete(self) -> tuple[int, dict[str, int]]:
        """Delete the jobs (their executions go with them), taking the ones the metrics tally
        counts as finished off it in the same transaction (:func:`jobqueue.tally.untally`:
        one aggregate over these jobs), so the finished counts stay the rows left."""
        from .tally import untally, writing_db

        refused = self.query.is_sliced or self.query.distinct_fields or self.query.combinator
        if refused or getattr(self, "_fields", None) is not None:
            return super().delete()  # which refuses them
        with transaction.atomic(using=writing_db(self)):
            untally(self)
            return super().delete()


class JobManager(models.Manager.from_queryset(JobQuerySet)):  # type: ignore[misc]
    def build(
        self,
        topic: str | Topic,
        payload: Any = None,
        *,
        priority: int | None = None,
        entity_id: str | None = None,
        run_after: dt.datetime | None = None,
        delay: float | dt.timedelta | None = None,
        parent: Job | uuid.UUID | str | None = None,
        depends_on: Iterable[Job | uuid.UUID | str] = (),
        max_attempts: int | None = None,
        timeout: int | None = None,
        job_id: uuid.UUID | str | None = None,
        key: str | None = None,
    ) -> tuple[Job, list[Any]]:
        """Validate everything and return an unsaved Job plus its dependency ids.

        ``job_id`` fixes the new job's primary key (a UUID, or its text) instead of a
        random one; ``enqueue()`` then creates it only once (see there).
        """
        # An argument left at None needs no check (this runs for every enqueue: each call counts).
        topic_model = self._topic_model()
        if (topic.name if isinstance(topic, topic_model) else topic) == SHELL_TOPIC:
            check_shell_enqueue(payload)  # refused while the shell topic is off
        topic_obj = topic if isinstance(topic, topic_model) else self._resolve_topic(topic)
        payload = {} if payload is None else payload
        payload_json = encode_payload(payload)
        priority = topic_obj.default_priority if priority is None else validate_priority(priority)
        if entity_id is not None:
            entity_id = validate_entity_id(entity_id)
        if key is None and topic_obj.key_from and isinstance(payload, dict):
            key = payload.get(topic_obj.key_from)
        if key is not None:
            key = validate_job_key(key)
        engine.flow.configure(topic_obj.name, topic_obj.flow_limits())  # how push_jobs() routes keyed jobs
        when = resolve_run_after(run_after, delay) if run_after is not None or delay is not None else None
        if max_attempts is None:
            max_attempts = topic_obj.max_attempts
        else:
            max_attempts = validate_positive_int(max_attempts, "max_attempts")
        timeout = topic_obj.timeout if timeout is None else validate_positive_int(timeout, "timeout")
        fixed_id = self._job_id(job_id, "job_id") if job_id is not None else None
        parent_id = self._job_id(parent, "parent") if parent is not None else None
        if parent_id is not None and not isinstance(parent, self.model) and not self.filter(pk=parent_id).exists():
            raise InvalidJob(f"parent: no job with id {parent_id}.")
        # A job named twice is one dependency (the link table holds each pair once).
        dep_ids = list(dict.fromkeys(self._job_id(d, "depends_on") for d in depends_on)) if depends_on else []

        now = timezone.now()
        if dep_ids:
            status = self.status_for_dependencies(dep_ids)
            if status == JobStatus.QUEUED and when is not None and when > now:
                status = JobStatus.SCHEDULED
        elif when is not None and when > now:
            status = JobStatus.SCHEDULED
        else:
            status = JobStatus.QUEUED
        values = self._new_values(topic_obj, now, tracing.capture())
        values["id"] = new_job_id() if fixed_id is None else fixed_id
        values["status"] = str(status)  # the text, which the insert sends as it is
        values["priority"] = priority
        values["payload"] = payload
        values["entity_id"] = entity_id
        values["key"] = key
        values["parent_id"] = parent_id
        values["max_attempts"] = max_attempts
        values["run_after"] = when
        values["timeout"] = timeout
        if status != JobStatus.QUEUED:
            values["queued_at"] = None
        return self._new_job(values, topic_obj, payload_json), dep_ids

    def _new_values(self, topic_obj: Topic, now: dt.datetime, trace_context: dict[str, str] | None) -> dict[str, Any]:
        """Every column of a new job of ``topic_obj`` queued ``now`` with no optional
        argument, but its ``id`` and ``payload``: :meth:`build`'s start, and what
        :meth:`enqueue_many` copies for each of a topic's plain items."""
        return {
            **_fresh(self.model),
            "topic_id": topic_obj.name,
            "status": QUEUED_TEXT,
            "priority": topic_obj.default_priority,
            "entity_id": None,
            "key": None,
            "parent_id": None,
            "max_attempts": topic_obj.max_attempts,
            "run_after": None,
            "timeout": topic_obj.timeout,
            "created_at": now,
            "updated_at": now,
            "queued_at": now,
            "trace_context": trace_context,
        }

    def _new_job(self, values: dict[str, Any], topic_obj: Topic, payload_json: str) -> Job:
        job = build_instance(self.model, values)
        self.model.topic.field.set_cached_value(job, topic_obj)
        job._payload_json = payload_json  # reused by the INSERT, and by COPY in enqueue_many
        return job

    def _plain_job(self, topic_obj: Topic, template: dict[str, Any], payload: Any) -> Job:
        """:meth:`build` of a job given only its topic and ``payload``, from ``template``
        (the topic's :meth:`_new_values`): what depends on the topic alone is not worked
        out again for each of :meth:`enqueue_many`'s items."""
        payload = {} if payload is None else payload
        payload_json = encode_payload(payload)
        values = template.copy()
        values["id"] = new_job_id()
        values["payload"] = payload
        if topic_obj.key_from and isinstance(payload, dict):
            key = payload.get(topic_obj.key_from)
            values["key"] = None if key is None else validate_job_key(key)
        return self._new_job(values, topic_obj, payload_json)

    def enqueue(self, topic: str | Topic, payload: Any = None, *, raise_priority: bool = True, **kwargs: Any) -> Job:
        """Create a job; it reaches its Redis queue when the current transaction commits.

        Keyword arguments: ``priority``, ``entity_id``, ``run_after``, ``delay``,
        ``parent``, ``depends_on``, ``max_attempts``, ``timeout``, ``job_id``, ``key`` (what the
        topic's flow control counts by, e.g. a tenant). Bad input
        raises a subclass of :class:`~jobqueue.exceptions.InvalidJob` and writes nothing.

        With a ``job_id`` (the caller's own id for this job, such as a message id that
        may be delivered twice) that a job already has, that job is returned and
        nothing is written; if it belongs to another topic,
        :class:`~jobqueue.exceptions.DuplicateJob` is raised.

        With an ``entity_id`` that already has an active job in this topic, the
        existing job is returned (its priority raised if the new one is higher,
        unless ``raise_priority`` is false: the API and the admin pass whether their
        user may change priorities); if that job is running,
        :class:`~jobqueue.exceptions.DuplicateJob` is raised.
        """
        job, dep_ids = self.build(topic, payload, **kwargs)
        db = router.db_for_write(self.model)
        create = _create()
        fixed = kwargs.get("job_id") is not None
        if not job.entity_id and not dep_ids and not fixed:
            create.insert_plain(job, db)
            return job
        with transaction.atomic(using=db):
            if fixed:
                existing = create.already_there(job)
                if existing is not None:
                    return existing
            if job.entity_id:
                existing = self._active_for_entity(job)
                if existing is not None:
                    return self._merge_duplicate(existing, job, raise_priority)
            try:
                with transaction.atomic(using=db):
                    create.insert(job, db, fast=False)
            except IntegrityError:
                # Another transaction committed the same id (or an active job of the entity) first.
                same_id = create.already_there(job) if fixed else None
                if same_id is not None:
                    return same_id
                existing = self._active_for_entity(job) if job.entity_id else None
                if existing is None:
                    raise
                return self._merge_duplicate(existing, job, raise_priority)
            if dep_ids:
                self._add_dependencies(job, dep_ids)
            create.created([job], db)
        return job

    def enqueue_many(self, items: Iterable[Mapping[str, Any] | Sequence[Any]]) -> list[Job]:
        """Create many jobs with one ``bulk_create`` and one pipelined Redis push.

        Each item is a dict of :meth:`enqueue`'s arguments (``{"topic": ..., "payload": ...}``)
        or a ``(topic, payload)`` pair. Items with an ``entity_id``, ``depends_on`` or
        ``job_id`` go through :meth:`enqueue` one by one so dedupe and dependencies hold;
        they are queued after the other items. The jobs are returned in the order of ``items``.
        """
        topics: dict[str, Topic] = {}
        templates: dict[str, dict[str, Any]] = {}  # per topic, for the items with only a payload
        now = timezone.now()
        trace_context = tracing.capture()
        simple: list[Job] = []
        special: list[dict[str, Any]] = []
        is_special: list[bool] = []  # per item, to return the jobs in the caller's order

        def topic_of(name: Any) -> Topic:
            if not isinstance(name, str):
                raise InvalidJob(f"Invalid topic name {name!r}.")
            topic_obj = topics.get(name)
            if topic_obj is None:
                topic_obj = topics[name] = self._resolve_topic(name)
            return topic_obj

        def add_plain(topic_obj: Topic, payload: Any) -> None:
            """A job with only a topic and a payload, built from its topic's template."""
            template = templates.get(topic_obj.name)
            if template is None:
                engine.flow.configure(topic_obj.name, topic_obj.flow_limits())  # as build() does
                template = templates[topic_obj.name] = self._new_values(topic_obj, now, trace_context)
            simple.append(self._plain_job(topic_obj, template, payload))
            is_special.append(False)

        for item in items:
            if type(item) is tuple and len(item) == 2 and item[0] != SHELL_TOPIC:  # the common pair
                add_plain(topic_of(item[0]), item[1])
                continue
            if isinstance(item, Mapping):
                kwargs = dict(item)
            elif isinstance(item, Sequence) and not isinstance(item, (str, bytes)) and len(item) == 2:
                kwargs = {"topic": item[0], "payload": item[1]}
            else:
                raise InvalidJob(
                    f"Item {item!r} is neither a dict of enqueue() arguments nor a (topic, payload) pair."
                )
            if "topic" not in kwargs:
                raise InvalidJob(f"Item {item!r} has no topic.")
            name = kwargs["topic"]
            kwargs["topic"] = topic_of(name)
            if len(kwargs) == 1 + ("payload" in kwargs) and name != SHELL_TOPIC:  # a topic, a payload
                add_plain(kwargs["topic"], kwargs.get("payload"))
                continue
            is_special.append(bool(kwargs.get("entity_id") or kwargs.get("depends_on") or kwargs.get("job_id")))
            if is_special[-1]:
                special.append(kwargs)
                continue
            job, _ = self.build(**kwargs)
            simple.append(job)
        # Strictly increasing times: FIFO order if the queue is ever rebuilt, and the jobs of
        # one call are read in order, a chunk at a time, by the reconcile (not as one tie).
        base = timezone.now()
        for offset, job in enumerate(simple):
            job.created_at = job.updated_at = at = base + dt.timedelta(microseconds=offset)
            if job.status == JobStatus.QUEUED:
                job.queued_at = at
        create = _create()
        db = router.db_for_write(self.model)
        with transaction.atomic(using=db):
            created = self._insert_many(simple, db)
            create.created(created, db)
            deduped = [self.enqueue(**kwargs) for kwargs in special]
        plain, other = iter(created), iter(deduped)
        return [next(other) if flag else next(plain) for flag in is_special]

    def _insert_many(self, jobs: list[Job], db: str) -> list[Job]:
        """Insert new jobs: with ``COPY`` on PostgreSQL (several times faster than a
        multi-row INSERT for thousands of rows), else with ``bulk_create``."""
        conn = connections[db]
        if conn.vendor != "postgresql" or len(jobs) < COPY_THRESHOLD:
            return self.bulk_create(jobs, batch_size=1000)
        fields = self.model._meta.concrete_fields
        qn = conn.ops.quote_name
        values_of = operator.attrgetter(*[f.attname for f in fields])
        json_at = [(i, f.attname) for i, f in enumerate(fields) if isinstance(f, models.JSONField)]
        statement = (
            f"COPY {qn(self.model._meta.db_table)} ({', '.join(qn(f.column) for f in fields)}) FROM STDIN"
        )
        with conn.cursor() as cursor, cursor.cursor.copy(statement) as copy:
            for job in jobs:
                row = list(values_of(job))
                for i, name in json_at:
                    if row[i] is not None:
                        # The payload's JSON was made (and checked) by build(); reuse it.
                        encoded = getattr(job, "_payload_json", None) if name == "payload" else None
                        row[i] = encoded if encoded is not None else json.dumps(row[i])
                copy.write_row(row)
        for job in jobs:
            job._state.adding = False
            job._state.db = db
        return jobs

    def set_priority(self, topic: str, entity_id: str, priority: int) -> Job:
        """Change the priority of the pending job of ``topic`` with this entity id."""
        job = self.filter(topic_id=topic, entity_id=entity_id, status__in=PENDING_STATUSES).first()
        if job is None:
            raise InvalidTransition(f"No pending job for entity {entity_id!r} in topic {topic!r}.")
        job.set_priority(priority)
        return job

    def queue_status(self, topic: str) -> dict[str, Any]:
        """Counts by status and, for queued jobs, by priority (highest first).

        The counts are :func:`jobqueue.resync.job_counts`'s: bounded at any table size, and
        exact (the finished ones from the metrics tally, which requeues and deletes update)."""
        from .resync import job_counts

        by_status = job_counts([topic])[topic]
        prio_rows = self.filter(topic_id=topic, status=JobStatus.QUEUED).values_list("priority").annotate(
            n=Count("pk")
        ).order_by("-priority")
        return {
            "topic": topic,
            "by_status": by_status,
            "by_priority": {priority: n for priority, n in prio_rows},
            "redis": engine.safe_call(engine.depths, topic),
            "flow": row.flow_state() if (row := self._topic_model().objects.filter(name=topic).first()) else None,
        }

    # -- helpers -----------------------------------------------------------------------

    def _topic_model(self) -> type[Topic]:
        return _related_model(self.model, "topic")

    def _resolve_topic(self, name: Any) -> Topic:
        return self._topic_model().objects.resolve(name)

    def status_for_dependencies(self, dep_ids: list[uuid.UUID]) -> str:
        """The status a new job with these dependencies starts in.

        ``queued`` when all have succeeded already, ``waiting`` otherwise. A missing
        dependency, or one that failed or was cancelled, is refused.
        """
        statuses = dict(self.filter(pk__in=dep_ids).values_list("pk", "status"))
        missing = [str(d) for d in dep_ids if d not in statuses]
        if missing:
            raise InvalidJob(f"depends_on: no job with id {', '.join(missing)}.")
        dead = [str(pk) for pk, status in statuses.items() if status in (JobStatus.FAILED, JobStatus.CANCELLED)]
        if dead:
            raise InvalidJob(
                f"depends_on: job {', '.join(dead)} failed or was cancelled; nothing can wait for it."
            )
        if all(status == JobStatus.SUCCEEDED for status in statuses.values()):
            return JobStatus.QUEUED
        return JobStatus.WAITING

    def _job_id(self, value: Any, what: str) -> uuid.UUID:
        if isinstance(value, self.model):
            return value.pk
        try:
            return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
        except ValueError:
            raise InvalidJob(f"{what}: {value!r} is not a job id.") from None

    def _active_for_entity(self, job: Job) -> Job | None:
        qs = self.filter(topic_id=job.topic_id, entity_id=job.entity_id, status__in=ACTIVE_STATUSES)
        conn = transaction.get_connection(router.db_for_write(self.model))
        if conn.features.has_select_for_update:
            qs = qs.select_for_update()
        elif conn.vendor == "sqlite" and conn.in_atomic_block:
            # No row locks: take SQLite's write lock before reading. Two transactions that
            # both read first cannot both upgrade to writing, and one fails at once with
            # "database is locked" instead of waiting for the other.
            with conn.cursor() as cursor:
                cursor.execute(f"UPDATE {conn.ops.quote_name(self.model._meta.db_table)} SET id = id WHERE 0")
        return qs.first()

    def _merge_duplicate(self, existing: Job, new: Job, raise_priority: bool) -> Job:
        if existing.status == JobStatus.RUNNING:
            raise DuplicateJob(
                f"Entity {existing.entity_id!r} already has a running job {existing.pk} in topic "
                f"{existing.topic_id!r}.",
                existing_id=existing.pk,
            )
        if raise_priority and new.priority > existing.priority:
            try:
                existing.set_priority(new.priority)
            except InvalidTransition:
                raise DuplicateJob(
                    f"Entity {existing.entity_id!r} already has a running job {existing.pk}.", existing_id=existing.pk
                ) from None
        return existing

    def _add_dependencies(self, job: Job, dep_ids: list[uuid.UUID]) -> None:
        through = self.model.depends_on.through
        through.objects.bulk_create([through(from_job_id=job.pk, to_job_id=dep) for dep in dep_ids])
        self.filter(pk__in=dep_ids, has_dependents=False).update(has_dependents=True)
