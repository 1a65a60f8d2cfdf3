"""The machine the numbers come from, and the Markdown table they are printed in."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def revision() -> str:
    """The jobqueue commit measured: from git, else ``JOBQUEUE_BENCH_REVISION`` (for an exported tree)."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    try:
        git = ["git", "-C", str(root)]
        done = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no", "--", "jobqueue"],
                               capture_output=True, text=True)
    except OSError:
        done = dirty = None
    if done is not None and done.returncode == 0:
        return done.stdout.strip() + (" (with uncommitted changes)" if dirty and dirty.stdout.strip() else "")
    return os.environ.get("JOBQUEUE_BENCH_REVISION", "unknown")


def machine() -> dict[str, str]:
    """CPU, cores and the versions of everything measured."""
    import django
    from django.db import connection

    from jobqueue.engine import get_redis

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SHOW server_version")
            database = f"PostgreSQL {cursor.fetchone()[0]}"
        else:
            cursor.execute("SELECT sqlite_version()")
            database = f"SQLite {cursor.fetchone()[0]}"
    return {
        "jobqueue revision": revision(),
        "CPU": cpu_model(),
        "cores": str(os.cpu_count()),
        "Python": platform.python_version(),
        "Django": django.get_version(),
        "database": database,
        "Redis": str(get_redis().info("server").get("redis_version")),
        "Celery": _version("celery"),
        "RQ": _version("rq"),
        "procrastinate": _version("procrastinate"),
        "django-tasks-db": _version("django-tasks-db"),
    }


@dataclass
class Row:
    """One workload: a figure per system, a ratio against each peer, the target."""

    label: str
    cells: dict[str, str]  # system key -> formatted figure ("n/a" where a peer has no equivalent)
    ratios: dict[str, float | None] = field(default_factory=dict)  # >1: jobqueue is better
    target: str = ""
    met: bool | None = None


def fmt_rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def fmt_ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def fmt_ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}×"


def fmt_met(value: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "—"}[value]


def table(rows: list[Row]) -> str:
    from .systems import COLUMNS, LABELS

    peers = COLUMNS[1:]
    lines = [
        "| workload | " + " | ".join(LABELS[k] for k in COLUMNS) + " | "
        + " | ".join(f"jobqueue vs {LABELS[k]}" for k in peers) + " | target | met? |",
        "| --- | " + " | ".join("---:" for _ in COLUMNS) + " | " + " | ".join("---:" for _ in peers)
        + " | --- | --- |",
    ]
    for row in rows:
        cells = [row.cells.get(k, "n/a") for k in COLUMNS]
        ratios = [fmt_ratio(row.ratios.get(k)) for k in peers]
        figures = " | ".join([*cells, *ratios])
        lines.append(f"| {row.label} | {figures} | {row.target} | {fmt_met(row.met)} |")
    return "\n".join(lines)


def document(rows: list[Row], info: dict[str, str], settings: dict[str, Any], notes: list[str]) -> str:
    """The whole Markdown report: machine, settings, table, notes."""
    parts = [
        "# jobqueue benchmark",
        "",
        "Machine: " + "; ".join(f"{k}: {v}" for k, v in info.items()) + ".",
        "",
        "Run: " + ", ".join(f"{k}={v}" for k, v in settings.items()) + ".",
        "",
        table(rows),
        "",
        "Ratios are jobqueue's advantage: above 1.00× jobqueue is faster (for latency: starts jobs sooner).",
    ]
    if notes:
        parts += ["", "Notes:", ""] + [f"- {note}" for note in notes]
    return "\n".join(parts) + "\n"
