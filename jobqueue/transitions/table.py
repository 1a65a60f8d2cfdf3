"""The job state machine as data: every transition, the states it leaves and enters, and
who may trigger it.

Each transition function in this package guards its ``UPDATE`` with the ``sources``
named here (``WHERE status IN sources``) and writes ``target``, so the table and the
code cannot disagree without ``tests/test_transition_table.py`` failing; the same
table is printed in ``docs/architecture.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..models import JobStatus

WAITING, SCHEDULED, QUEUED, RUNNING = JobStatus.WAITING, JobStatus.SCHEDULED, JobStatus.QUEUED, JobStatus.RUNNING
SUCCEEDED, FAILED, CANCELLED = JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED
PENDING = (WAITING, SCHEDULED, QUEUED)


@dataclass(frozen=True)
class Transition:
    """One named change of ``Job.status``."""

    name: str
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    by: str
    doc: str

    @property
    def target(self) -> str:
        """The single state this transition enters (most enter exactly one)."""
        if len(self.targets) != 1:
            raise ValueError(f"Transition {self.name!r} enters one of {self.targets}.")
        return self.targets[0]


def _t(name: str, sources: tuple[str, ...], targets: tuple[str, ...], by: str, doc: str) -> Transition:
    return Transition(name, tuple(sources), tuple(targets), by, doc)


#: Every transition, in the order a job usually meets them. ``sources`` empty: the job is new.
TRANSITIONS: dict[str, Transition] = {
    t.name: t
    for t in (
        _t("enqueue", (), (QUEUED, SCHEDULED, WAITING), "code, API (`add_job`), admin, chaining, cron, tasks",
           "A new job: waiting for dependencies, scheduled for later, or queued."),
        _t("release", (WAITING,), (QUEUED, SCHEDULED), "the last dependency succeeding",
           "Every dependency succeeded."),
        _t("hold", (QUEUED, SCHEDULED), (WAITING,), "code (`add_dependencies`)",
           "A pending job got a dependency that is not finished."),
        _t("promote", (SCHEDULED,), (QUEUED,), "worker maintenance", "Its `run_after` is due."),
        _t("run_now", (SCHEDULED,), (QUEUED,), "user with `run_now_job`", "Run a scheduled job now."),
        _t("claim", (QUEUED, SCHEDULED), (RUNNING,), "worker",
           "A worker leased it from Redis (a due job may still be `scheduled` in the row)."),
        _t("succeed", (RUNNING,), (SUCCEEDED,), "worker", "The handler returned."),
        _t("retry", (RUNNING,), (SCHEDULED,), "worker", "The attempt failed and attempts are left."),
        _t("fail", (RUNNING,), (FAILED,), "worker", "The attempt failed and no attempts are left."),
        _t("abort", (RUNNING,), (CANCELLED,), "worker, after a cancel request",
           "A running job saw its cancel request."),
        _t("interrupt", (RUNNING,), (QUEUED,), "worker told to stop now",
           "The attempt is aborted and not counted."),
        _t("unclaim", (RUNNING,), (QUEUED,), "stopping worker",
           "Claimed but never started: not counted, no Execution row."),
        _t("lose", (RUNNING,), (QUEUED, FAILED), "any worker (expired lease)",
           "Its worker died: requeued while attempts are left, else failed."),
        _t("cancel", PENDING, (CANCELLED,), "user with `cancel_job`, a failed dependency",
           "Cancel a pending job (a running one is asked to abort)."),
        _t("requeue", (FAILED, CANCELLED), (QUEUED,), "user with `requeue_job`", "Run a finished job again."),
    )
}

#: Changes that keep the status (guarded the same way, listed for completeness).
SAME_STATUS = {"set_priority": PENDING, "progress": (RUNNING,)}


def sources_of(name: str) -> tuple[str, ...]:
    """The states transition (or same-status change) ``name`` may leave."""
    return TRANSITIONS[name].sources if name in TRANSITIONS else SAME_STATUS[name]


def allows(name: str, status: str) -> bool:
    """Whether transition (or same-status change) ``name`` may start from ``status``."""
    return status in sources_of(name)


def markdown_table() -> str:
    """The table as Markdown (what ``docs/architecture.md`` shows)."""
    lines = ["| transition | from | to | triggered by |", "|---|---|---|---|"]
    for t in TRANSITIONS.values():
        sources = ", ".join(t.sources) or "(new)"
        lines.append(f"| `{t.name}` | {sources} | {', '.join(t.targets)} | {t.by} |")
    return "\n".join(lines)
