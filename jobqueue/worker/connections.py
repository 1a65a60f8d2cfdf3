"""The worker's database connections: commits that need not wait for the disk on
PostgreSQL, and connections that broke dropped so that the next query opens a new one.

A busy worker otherwise keeps its connection between jobs: with ``CONN_MAX_AGE = 0``,
closing it per job would reconnect for every job.
"""

from __future__ import annotations

from typing import Any

from django.db import connections
from django.db.backends.signals import connection_created


def _relax_commit_durability(sender: Any, connection: Any, **kwargs: Any) -> None:
    """On PostgreSQL, let the worker's commits return before their WAL is flushed.

    Only the worker's own bookkeeping (claims, outcomes, successors) is affected; a
    PostgreSQL crash can lose the last moments of it, and those jobs are then run
    again (the lease and resync recover them) — at-least-once, never lost.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit TO OFF")


def relax_commit_durability() -> None:
    """Relax the durability of this process's commits, on open and future connections."""
    connection_created.connect(_relax_commit_durability, dispatch_uid="jobqueue.worker.commit")
    for conn in connections.all(initialized_only=True):
        if conn.connection is not None:
            _relax_commit_durability(conn.vendor, conn)


def drop_broken() -> None:
    """Close the connections on which an error occurred, if they are no longer usable."""
    for conn in connections.all(initialized_only=True):
        if conn.errors_occurred:
            conn.close_if_unusable_or_obsolete()


def close_unusable() -> None:
    """After a lost connection: close every connection that is unusable or too old."""
    for conn in connections.all(initialized_only=True):
        conn.close_if_unusable_or_obsolete()


def close_all() -> None:
    """Close this thread's open connections (the next query reconnects)."""
    for conn in connections.all(initialized_only=True):
        conn.close()
