"""The transition table (``jobqueue.transitions.table``, printed in docs/architecture.md)
is what the code does: each transition, tried from every status, changes exactly the
jobs in its source states, into one of its target states, and nothing else writes a
job's status."""

from __future__ import annotations

import datetime as dt
import re
import time
from pathlib import Path

import pytest
from django.utils import timezone

from jobqueue import engine
from jobqueue.exceptions import InvalidTransition
from jobqueue.models import Execution, Job, JobStatus
from jobqueue.transitions import attempt, followups, manual, recovery
from jobqueue.transitions.table import TRANSITIONS, markdown_table
from tests.states import force

ROOT = Path(__file__).resolve().parent.parent
ALL = [s.value for s in JobStatus]


def job_in(status: str) -> Job:
    """A job of topic ``echo`` whose row says ``status`` (Redis not told)."""
    job = Job.objects.enqueue("echo", {"n": 1})
    values: dict = {"status": status}
    if status == JobStatus.RUNNING:
        values.update(attempts=1, worker_id="w", started_at=timezone.now())
    if status == JobStatus.SCHEDULED:
        values.update(run_after=timezone.now() - dt.timedelta(seconds=1))
    if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED):
        values.update(finished_at=timezone.now(), attempts=1)
    assert force(job, ALL, **values)
    return job


def execution_of(job: Job) -> Execution:
    now = timezone.now()
    return Execution(job=job, attempt=attempt.execution_number(job), worker_id="w", started_at=now,
                     finished_at=now, outcome="succeeded")


def release(job: Job) -> None:
    dependency = Job.objects.enqueue("echo", {})
    Job.depends_on.through.objects.create(from_job_id=job.pk, to_job_id=dependency.pk)
    force(dependency, ALL, status=JobStatus.SUCCEEDED, has_dependents=True)
    followups.release_dependents(dependency)


def promote(job: Job) -> None:
    engine.schedule("echo", [(str(job.pk), time.time() - 1, 0, None)])
    recovery.promote("echo")


#: How each transition is asked for, through the code that owns it.
TRY = {
    "release": release,
    "hold": manual.hold,
    "promote": promote,
    "run_now": manual.run_now,
    "claim": lambda job: attempt.claim(str(job.pk), "w", 1),
    "succeed": lambda job: attempt.succeed(job, execution_of(job), {"ok": 1}, {"ok": 1}),
    "retry": lambda job: attempt.fail(job, execution_of(job), "boom", timezone.now() + dt.timedelta(hours=1)),
    "fail": lambda job: attempt.fail(job, execution_of(job), "boom", None),
    "abort": lambda job: attempt.abort(job, execution_of(job)),
    "interrupt": lambda job: attempt.interrupt(job, execution_of(job)),
    "unclaim": attempt.unclaim,
    "lose": lambda job: recovery.recover("echo", str(job.pk)),
    "cancel": manual.cancel,
    "requeue": manual.requeue,
}


def test_the_docs_show_the_table_of_the_code():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert markdown_table() in text


def test_every_transition_but_enqueue_is_tried():
    assert set(TRY) == set(TRANSITIONS) - {"enqueue"}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name", sorted(TRY))
@pytest.mark.parametrize("status", ALL)
def test_a_transition_changes_exactly_its_source_states(name, status):
    transition = TRANSITIONS[name]
    job = job_in(status)
    try:
        TRY[name](job)
    except InvalidTransition:
        pass
    after = Job.objects.get(pk=job.pk).status
    if status in transition.sources:
        assert after in transition.targets, f"{name} from {status} ended {after}"
    else:
        assert after == status, f"{name} is not allowed from {status} but moved the job to {after}"


@pytest.mark.django_db(transaction=True)
def test_enqueue_enters_its_targets():
    plain = Job.objects.enqueue("echo", {})
    later = Job.objects.enqueue("echo", {}, delay=3600)
    waiting = Job.objects.enqueue("echo", {}, depends_on=[later])
    assert [plain.status, later.status, waiting.status] == list(TRANSITIONS["enqueue"].targets)


def test_nothing_outside_the_transitions_writes_a_status():
    """A status written anywhere else would be a transition the table does not know."""
    writes = re.compile(r"\.update\((?:[^()]|\([^()]*\))*\bstatus\s*=", re.S)
    offenders = []
    for path in (ROOT / "jobqueue").rglob("*.py"):
        if "transitions" in path.parts or "migrations" in path.parts:
            continue
        text = path.read_text(encoding="utf-8")
        if writes.search(text) or re.search(r"\.status\s*=\s*JobStatus\.", text):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
