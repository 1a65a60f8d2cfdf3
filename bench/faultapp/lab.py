"""The fault-injection lab: private servers, this process's Django set up on them,
and ``jobworker`` subprocesses that can be killed, stopped and restarted at will."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .servers import PostgresServer, RedisServer

ROOT = Path(__file__).resolve().parent.parent.parent


class Worker:
    """One ``jobworker`` process, in its own process group (so a kill takes its children too)."""

    def __init__(self, lab: Lab, worker_id: str, topics: list[str], args: list[str],
                 env: dict[str, str] | None = None):
        self.worker_id = worker_id
        self.log_path = lab.run_dir / f"worker-{worker_id}.log"
        argv = [sys.executable, "-m", "django", "jobworker", "--topics", *topics, "--worker-id", worker_id,
                *args, "--settings=bench.faults_settings"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env={**lab.child_env(), **(env or {})}, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        self.pid = self.proc.pid
        self.killed_at: float | None = None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill9(self) -> float:
        """SIGKILL the worker and everything it forked; returns when."""
        self.killed_at = time.time()
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        return self.killed_at

    def term(self) -> None:
        """SIGTERM to the worker alone, as ``kill PID`` would send it."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def cleanup(self) -> None:
        """Kill whatever is left of the process group."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.wait()


class Lab:
    """Own Redis and PostgreSQL (or SQLite), Django configured on them, workers started on demand."""

    def __init__(self, db: str = "postgres", keep: bool = False):
        if db not in ("postgres", "sqlite"):
            raise ValueError("db must be 'postgres' or 'sqlite'")
        self.db = db
        self.keep = keep
        self.dir = Path(tempfile.mkdtemp(prefix="jobqueue-faults-"))
        os.chmod(self.dir, 0o755)  # the postgres user must reach its data directory inside
        self.redis = RedisServer(self.dir)
        self.pg = PostgresServer(self.dir) if db == "postgres" else None
        self.run_dir = self.dir
        self.workers: list[Worker] = []

    def env(self) -> dict[str, str]:
        env = {
            "DJANGO_SETTINGS_MODULE": "bench.faults_settings",
            "JOBQUEUE_FAULTS_DB": self.db,
            "JOBQUEUE_FAULTS_REDIS_URL": self.redis.url,
            "JOBQUEUE_FAULTS_PREFIX": "jqfaults",
            "JOBQUEUE_FAULTS_LEASE_SECONDS": "3",
            "JOBQUEUE_FAULTS_HEARTBEAT_SECONDS": "0.5",
            "JOBQUEUE_FAULTS_LOCK_TTL_SECONDS": "3",
        }
        if self.pg is not None:
            env.update(JOBQUEUE_FAULTS_PG_HOST="127.0.0.1", JOBQUEUE_FAULTS_PG_PORT=str(self.pg.port))
        else:
            env["JOBQUEUE_FAULTS_SQLITE_NAME"] = str(self.dir / "faults.sqlite3")
        return env

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env())
        env["JOBQUEUE_FAULTS_LOG_DIR"] = str(self.run_dir)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start(self) -> None:
        """Start the servers, set Django up on them in this process and create the tables."""
        self.redis.start()
        if self.pg is not None:
            self.pg.init()
            self.pg.start()
        os.environ.update(self.env())
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        import django
        from django.core.management import call_command

        django.setup()
        # This process enqueues through outages on purpose: its own warnings are expected noise.
        logging.getLogger("jobqueue").setLevel(logging.ERROR)
        call_command("migrate", verbosity=0)

    def reset(self, name: str) -> Path:
        """A clean slate for a scenario: no jobs, an empty Redis, a fresh folder for logs."""
        from django.db import connection

        from jobqueue.engine import get_redis, reset_clients
        from jobqueue.engine.queue import forget_announced
        from jobqueue.models import Execution, Job
        from jobqueue.topic_manager import clear_topic_cache

        self.stop_workers()
        self.ensure_db()
        models = (Execution, Job.depends_on.through, Job)
        tables = [connection.ops.quote_name(m._meta.db_table) for m in models]
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(f"TRUNCATE {', '.join(tables)}")
            else:
                for table in tables:
                    cursor.execute(f"DELETE FROM {table}")
        connection.close()
        reset_clients()
        forget_announced()
        clear_topic_cache()
        get_redis().flushall()
        self.run_dir = self.dir / name
        self.run_dir.mkdir(exist_ok=True)
        os.environ["JOBQUEUE_FAULTS_LOG_DIR"] = str(self.run_dir)
        return self.run_dir

    def ensure_db(self, timeout: float = 30.0) -> None:
        """Wait until the database answers (after a restart this process reconnects)."""
        from django.db import connection
        from django.db.utils import DatabaseError

        deadline = time.monotonic() + timeout
        while True:
            try:
                connection.ensure_connection()
                with connection.cursor() as cursor:
                    cursor.execute("SELECT 1")
                return
            except DatabaseError:
                connection.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def worker(self, worker_id: str, topics: list[str], *args: str, env: dict[str, str] | None = None) -> Worker:
        """Start a worker; ``env`` adds to (or overrides) the lab's environment, e.g.
        ``{"JOBQUEUE_FAULTS_RECONCILE_SECONDS": "2"}``."""
        worker = Worker(self, worker_id, topics, list(args), env)
        self.workers.append(worker)
        return worker

    def stop_workers(self, grace: float = 15.0) -> list[Worker]:
        """SIGTERM every live worker, wait ``grace`` seconds, kill the rest; returns the ones killed."""
        live = [w for w in self.workers if w.alive()]
        for w in live:
            w.term()
        deadline = time.monotonic() + grace
        stuck = []
        for w in live:
            if w.wait(max(0.1, deadline - time.monotonic())) is None:
                stuck.append(w)
        for w in self.workers:
            w.cleanup()
        self.workers = []
        return stuck

    def close(self) -> None:
        for w in self.workers:
            w.cleanup()
        self.workers = []
        self.redis.stop()
        if self.pg is not None:
            try:
                self.pg.stop()
            finally:
                if not self.keep:
                    self.pg.remove()
        if not self.keep:
            import shutil

            shutil.rmtree(self.dir, ignore_errors=True)


def poll(predicate: Callable[[], Any], timeout: float, interval: float = 0.25,
         tick: Callable[[], None] | None = None) -> Any:
    """Call ``predicate`` until it is truthy or ``timeout`` passes (database errors are waited out)."""
    from django.db import connection
    from django.db.utils import DatabaseError

    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except DatabaseError:
            connection.close()
            value = None
        if value:
            return value
        if tick is not None:
            tick()
        time.sleep(interval)
    return value
