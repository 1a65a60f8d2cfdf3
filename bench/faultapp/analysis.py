"""What really happened in a scenario: the handlers' run logs and the database's
``Execution`` rows, compared and summed up."""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Run:
    """One call of a handler, as its own log lines tell it."""

    job: str
    attempt: int
    pid: int
    start: float
    end: float | None = None


def read_runs(folder: Path) -> dict[str, list[Run]]:
    """Handler calls by job id, from every ``runs-*.log`` under ``folder``."""
    runs: dict[str, list[Run]] = defaultdict(list)
    for path in sorted(folder.glob("runs-*.log")):
        open_runs: dict[tuple[str, int], Run] = {}
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) != 5:
                continue  # a line cut short by a kill
            kind, job, attempt, pid, when = parts[0], parts[1], int(parts[2]), int(parts[3]), float(parts[4])
            if kind == "S":
                run = Run(job, attempt, pid, when)
                runs[job].append(run)
                open_runs[(job, attempt)] = run
            elif kind == "E" and (job, attempt) in open_runs:
                open_runs.pop((job, attempt)).end = when
    return runs


def max_overlap(intervals: Iterable[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end and a start at the same instant don't overlap)."""
    events = []
    for start, end in intervals:
        events.append((start, 1))
        events.append((max(start, end), -1))
    events.sort(key=lambda e: (e[0], e[1]))  # ends before starts at equal times
    current = best = 0
    for _, step in events:
        current += step
        best = max(best, current)
    return best


def run_intervals(runs: dict[str, list[Run]], killed_at: dict[int, float], jobs: set[str] | None = None,
                  ) -> list[tuple[float, float]]:
    """Each handler call's interval; a call cut by a kill ends at the kill."""
    out = []
    for job, calls in runs.items():
        if jobs is not None and job not in jobs:
            continue
        for run in calls:
            end = run.end if run.end is not None else killed_at.get(run.pid, run.start)
            out.append((run.start, end))
    return out


def _ts(value: dt.datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def serial_violations(executions: list[dict[str, Any]]) -> int:
    """Executions that started before the previous one (by start time) finished."""
    rows = sorted((e for e in executions if e["outcome"] != "lost"), key=lambda e: e["started_at"])
    bad = 0
    for before, after in zip(rows, rows[1:], strict=False):
        if before["finished_at"] is not None and after["started_at"] < before["finished_at"]:
            bad += 1
    return bad


def execution_overlap(executions: list[dict[str, Any]]) -> int:
    """Most executions (lost ones aside: their end is when they were noticed) open at once."""
    spans = [(_ts(e["started_at"]), _ts(e["finished_at"])) for e in executions if e["outcome"] != "lost"]
    return max_overlap((s, f) for s, f in spans if s is not None and f is not None)


@dataclass
class JobCheck:
    """Outcome counts over a set of jobs."""

    jobs: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    executed_twice: int = 0  # jobs whose handler was called 2+ times (run logs)
    multi_execution: int = 0  # jobs with 2+ Execution rows
    twice_not_after_kill: int = 0  # 2+ executions without a lost one of a killed worker
    unrecorded_attempts: int = 0  # attempts counted on the job with no Execution row
    unmarked_lost: int = 0  # attempts before the last that were neither lost nor a recorded failure
    ran_but_not_recorded: int = 0  # handler calls with no Execution row of that attempt
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "statuses": dict(self.statuses),
            "outcomes": dict(self.outcomes),
            "executed_twice": self.executed_twice,
            "multi_execution": self.multi_execution,
            "twice_not_after_kill": self.twice_not_after_kill,
            "unrecorded_attempts": self.unrecorded_attempts,
            "unmarked_lost": self.unmarked_lost,
            "ran_but_not_recorded": self.ran_but_not_recorded,
        }


def check_jobs(job_ids: Iterable[str], runs: dict[str, list[Run]], killed_workers: Iterable[str] = (),
               retry_outcomes: Iterable[str] = ()) -> JobCheck:
    """Tie every job to its Execution rows and its handler calls.

    An attempt before the last must be ``lost`` (or one of ``retry_outcomes``: a
    scenario's expected failures such as ``timeout``); a job whose handler ran
    twice must owe it to a lost attempt of a killed worker.
    """
    from jobqueue.models import Execution, Job

    ids = [str(i) for i in job_ids]
    killed = set(killed_workers)
    allowed = {"lost", *retry_outcomes}
    check = JobCheck(jobs=len(ids))
    execs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    attempts: dict[str, int] = {}
    for start in range(0, len(ids), 2000):
        chunk = ids[start : start + 2000]
        for pk, status, n in Job.objects.filter(pk__in=chunk).values_list("pk", "status", "attempts"):
            check.statuses[status] += 1
            attempts[str(pk)] = n
        rows = Execution.objects.filter(job_id__in=chunk).values("job_id", "attempt", "outcome", "worker_id")
        for row in rows:
            execs[str(row["job_id"])].append(row)
            check.outcomes[row["outcome"]] += 1
    missing = len(ids) - sum(check.statuses.values())
    if missing:
        check.statuses["missing"] += missing
    for job in ids:
        rows = sorted(execs.get(job, []), key=lambda r: r["attempt"])
        recorded = {r["attempt"] for r in rows}
        n = attempts.get(job, 0)
        check.unrecorded_attempts += len(set(range(1, n + 1)) - recorded)
        check.unmarked_lost += sum(1 for r in rows[:-1] if r["outcome"] not in allowed)
        calls = runs.get(job, [])
        check.ran_but_not_recorded += sum(1 for c in calls if c.attempt not in recorded)
        if len(calls) >= 2:
            check.executed_twice += 1
        if len(rows) >= 2:
            check.multi_execution += 1
            if not any(r["outcome"] == "lost" and r["worker_id"] in killed for r in rows) and not (
                retry_outcomes and all(r["outcome"] in allowed for r in rows[:-1])
            ):
                check.twice_not_after_kill += 1
                if len(check.problems) < 5:
                    seen = [(r["attempt"], r["outcome"], r["worker_id"]) for r in rows]
                    check.problems.append(f"job {job}: executions {seen}")
    return check


def executions_of(job_ids: Iterable[str]) -> list[dict[str, Any]]:
    from jobqueue.models import Execution

    ids = [str(i) for i in job_ids]
    out: list[dict[str, Any]] = []
    for start in range(0, len(ids), 2000):
        out += Execution.objects.filter(job_id__in=ids[start : start + 2000]).values(
            "job_id", "attempt", "outcome", "worker_id", "started_at", "finished_at"
        )
    return out
