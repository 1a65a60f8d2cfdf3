"""The admin in a real browser (headless Chromium through Playwright): log in, cancel a job
with the change list's action, watch the dashboard refresh in place, and check that no
``<script>`` a job wrote ever runs.

Needs the ``chromium`` package (``/usr/bin/chromium``) and ``playwright`` from PyPI; the
browser Playwright would download is not used.
"""

from __future__ import annotations

import os
import time

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from jobqueue import engine
from jobqueue.models import Execution, Job

from .test_admin_support import DASHBOARD, JOB_CHANGELIST, job_url, set_status

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
