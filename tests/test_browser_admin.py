"""The admin in a real browser (headless Chromium through Playwright): log in, cancel a job
with the change list's action, watch the dashboard refresh in place, check that no
``<script>`` a job wrote ever runs, and that the change lists fit a 1400 px window.

Needs the ``chromium`` package (``/usr/bin/chromium``, which ``make test`` installs) and
``playwright`` from PyPI; the browser Playwright would download is not used. Without
Chromium these tests fail, saying so: they never skip.
"""

from __future__ import annotations

import os
import time

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from jobqueue import engine
from jobqueue.models import Execution, Job, Topic

from .test_admin_support import DASHBOARD, JOB_CHANGELIST, TOPIC_CHANGELIST, job_url, set_status

pytestmark = pytest.mark.django_db(transaction=True)

CHROMIUM = os.environ.get("JOBQUEUE_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PASSWORD = "browser-secret"
# Each sets window.__xss if the browser ever runs it.
HOSTILE = [
    "<script>window.__xss = 'script';</script>",
    '<img src="x" onerror="window.__xss = \'img\'">',
    '"><svg onload="window.__xss = \'svg\'">',
]


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"No Chromium at {CHROMIUM}: `make test` installs Debian's chromium package (as root), or set "
                    f"JOBQUEUE_TEST_CHROMIUM to a Chromium binary.", pytrace=False)
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the test's own ORM calls
    # are plain blocking calls all the same.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield instance
            instance.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser, live_server):
    User.objects.create_superuser("root", "root@example.com", PASSWORD)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(15_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.goto(live_server.url + "/admin/login/?next=/admin/")
    tab.fill("#id_username", "root")
    tab.fill("#id_password", PASSWORD)
    tab.click("input[type=submit]")
    tab.wait_for_url(live_server.url + "/admin/")
    yield tab
    context.close()
    assert errors == [], errors


def hostile_jobs() -> Job:
    """Jobs, an execution and a worker record full of markup that must stay text."""
    payload = {f"k{i}": text for i, text in enumerate(HOSTILE)}
    job = Job.objects.enqueue("echo", payload, entity_id=HOSTILE[1])
    set_status(
        job,
        "failed",
        result={"r": HOSTILE},
        error=HOSTILE[0],
        progress=30,
        progress_message=HOSTILE[1],
        stage=HOSTILE[2],
        worker_id=HOSTILE[2],
    )
    Execution.objects.create(
        job=job,
        attempt=1,
        outcome="failed",
        stdout=HOSTILE[0],
        stderr=HOSTILE[1],
        traceback=HOSTILE[2],
        error=HOSTILE[0],
        hostname=HOSTILE[1],
    )
    running = set_status(
        Job.objects.enqueue("other", {}),
        "running",
        progress=60,
        progress_message=HOSTILE[0],
        stage=HOSTILE[1],
        started_at=timezone.now(),
    )
    engine.beat(
        HOSTILE[2],
        {
            "host": HOSTILE[0],
            "pid": 1,
            "topics": [HOSTILE[1]],
            "wanted": ["echo"],
            "current": [str(running.pk)],
            "processed": 5,
            "started": time.time(),
        },
    )
    return job


def no_xss(tab) -> None:
    assert tab.evaluate("window.__xss") is None


def test_cancel_a_job_from_the_change_list(page, live_server):
    hostile = hostile_jobs()
    target = Job.objects.enqueue("echo", {"name": "target"})
    assert str(target.pk) in engine.queue_ids("echo")

    page.goto(live_server.url + JOB_CHANGELIST)
    no_xss(page)
    row = page.locator("#result_list tbody tr", has=page.locator(f'input[value="{target.pk}"]'))
    assert row.locator(".jq-badge").inner_text().strip() == "queued"
    row.locator('input[name="_selected_action"]').check()
    page.select_option('select[name="action"]', "cancel_jobs")
    page.locator('button[name="index"]').first.click()

    page.wait_for_selector("ul.messagelist")
    assert "Cancelled 1 job." in page.locator("ul.messagelist").inner_text()
    row = page.locator("#result_list tbody tr", has=page.locator(f'input[value="{target.pk}"]'))
    assert row.locator(".jq-badge").inner_text().strip() == "cancelled"
    assert Job.objects.get(pk=target.pk).status == "cancelled"
    assert str(target.pk) not in engine.queue_ids("echo")
    no_xss(page)

    page.goto(live_server.url + job_url(hostile))
    assert HOSTILE[0] in page.locator(".field-payload_json pre").inner_text()  # shown as text
    no_xss(page)


def test_dashboard_refreshes_in_place(page, live_server):
    hostile_jobs()
    Job.objects.enqueue("echo", {})
    page.goto(live_server.url + DASHBOARD + "?refresh=1")
    no_xss(page)
    assert page.locator("svg.jq-svg").count() == 1
    page.evaluate("window.__marker = 'same page'")
    queued = page.locator(".jq-stat-n").first
    assert queued.inner_text() == "1"

    Job.objects.enqueue_many([("echo", {"i": i}) for i in range(3)])
    page.wait_for_function(
        "() => document.querySelector('.jq-stat-n').textContent.trim() === '4'"
        " && Number(document.getElementById('jq-dashboard').dataset.refreshes) >= 1"
    )

    assert page.evaluate("window.__marker") == "same page"  # swapped in place, not reloaded
    assert page.locator("svg.jq-svg").count() == 1
    assert HOSTILE[0] in page.locator(".jq-worker-row").first.inner_text()  # the worker's host, as text
    no_xss(page)


WORKER = "worker-7.eu-west-1.compute.internal:48213:9f3a2c"


@pytest.mark.parametrize("changelist", [JOB_CHANGELIST, TOPIC_CHANGELIST, "/admin/jobqueue/execution/"])
def test_the_change_lists_fit_a_1400_px_window(page, live_server, changelist):
    """Beside the admin's sidebar and filters, every column shows: the table does not
    scroll sideways, and its last column ends inside it."""
    Topic.objects.filter(name="echo").update(concurrency=2)
    running = set_status(
        Job.objects.enqueue("echo", {}, entity_id="customer-48213-invoice-2024-11"),
        "running", progress=40, progress_message="rendering page 12 of 30", stage="render", worker_id=WORKER,
        attempts=1,
    )
    Execution.objects.create(job=running, attempt=1, outcome="running", worker_id=WORKER,
                             hostname="worker-7.eu-west-1.compute.internal", pid=48213)
    Job.objects.enqueue("echo", {}, delay=3600, priority=50)
    assert engine.TopicLock("echo", token="t1", worker_id=WORKER).acquire(limit=2)
    engine.beat(WORKER, {"host": "worker-7.eu-west-1.compute.internal", "pid": 48213, "topics": ["echo"],
                         "wanted": ["echo"], "current": [str(running.pk)], "processed": 5, "started": time.time()})

    page.goto(live_server.url + changelist)
    assert page.locator("#result_list tbody tr").count() >= 1
    results = page.locator("#changelist-form .results")
    assert results.evaluate("r => r.scrollWidth - r.clientWidth") == 0
    box, last = results.bounding_box(), page.locator("#result_list thead th").last.bounding_box()
    assert last["x"] + last["width"] <= box["x"] + box["width"] + 1
    assert page.evaluate("document.documentElement.scrollWidth") <= 1400
    if changelist == TOPIC_CHANGELIST:  # the slot holders, once cut off
        row = page.locator("#result_list tbody tr", has=page.locator("a", has_text="echo"))
        slots = row.locator("td.field-slots_display")
        assert "1 of 2 held" in slots.inner_text() and WORKER in slots.inner_text()
        cell = slots.bounding_box()
        assert cell["x"] + cell["width"] <= box["x"] + box["width"] + 1
    if changelist == JOB_CHANGELIST:
        row = page.locator("#result_list tbody tr", has=page.locator(f'input[value="{running.pk}"]'))
        status = row.locator("td.field-status_column").inner_text()
        assert "running" in status and "1 / 2 attempts" in status and WORKER in status
