"""Security properties: JSON only (never pickle), handlers only from the registry, Redis
keys namespaced by the prefix, and enqueue() refusing bad input before writing anything."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from jobqueue import engine
from jobqueue.exceptions import InvalidJob, InvalidPayload, PayloadTooLarge, UnknownTopic
from jobqueue.models import Job, Topic
from jobqueue.models_api import ApiToken
from jobqueue.worker import Worker
from tests.test_admin_support import client_for, make_user, topic_form, topic_url
from tests.workerutil import REPO_ROOT, child_env, jobqueue_settings, manage_command

pytestmark = pytest.mark.django_db(transaction=True)

SOURCE = Path(REPO_ROOT) / "jobqueue"
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def redis_dump(prefix: str | None = None) -> dict[str, object]:
    """Every key of the test Redis (under ``prefix`` if given) with its whole content."""
    r = engine.get_redis()
    out: dict[str, object] = {}
    for raw in r.scan_iter(match=f"{prefix}:*" if prefix else "*"):
        key = raw.decode()
        kind = r.type(raw).decode()
        if kind == "zset":
            out[key] = [m.decode() for m in r.zrange(raw, 0, -1)]
        elif kind == "hash":
            out[key] = {k.decode(): v.decode(errors="replace") for k, v in r.hgetall(raw).items()}
        elif kind == "set":
            out[key] = sorted(m.decode() for m in r.smembers(raw))
        elif kind == "list":
            out[key] = [m.decode(errors="replace") for m in r.lrange(raw, 0, -1)]
        else:
            out[key] = (r.get(raw) or b"").decode(errors="replace")
    return out


def raw_payload(job_id) -> str:
    """The payload column as the database stores it, as text."""
    table = connection.ops.quote_name(Job._meta.db_table)
    cast = "::text" if connection.vendor == "postgresql" else ""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT payload{cast} FROM {table} WHERE id = %s", [Job._meta.pk.get_db_prep_value(
            job_id, connection)])
        (value,) = cursor.fetchone()
    assert isinstance(value, str), f"the payload came back as {type(value).__name__}, not JSON text"
    return value


# -- JSON only ------------------------------------------------------------------------------


def test_no_pickle_in_the_source():
    pattern = re.compile(r"^\s*(import|from)\s+(c?pickle|_pickle|dill|marshal|shelve)\b|pickle\.loads?\(",
                         re.M)
    offenders = []
    for path in SOURCE.rglob("*.py"):
        if pattern.search(path.read_text(encoding="utf-8")):
            offenders.append(str(path.relative_to(SOURCE.parent)))
    assert list(SOURCE.rglob("*.py")), "the jobqueue sources were not found"
    assert offenders == []


def test_redis_holds_ids_and_the_database_json_text():
    marker = "payload-marker-7f3c"
    payload = {"secret": marker, "nested": [1, {"x": marker}], "text": "é ünïcode ✓"}
    queued = Job.objects.enqueue("echo", payload)
    scheduled = Job.objects.enqueue("echo", payload, delay=3600)
    deduped = Job.objects.enqueue("other", payload, entity_id="entity-1")
    dump = redis_dump()
    assert dump, "nothing reached Redis"
    assert marker not in json.dumps(dump)
    ids = {str(queued.pk), str(scheduled.pk), str(deduped.pk)}
    for key, value in dump.items():
        assert key.startswith(f"{settings.JOBQUEUE['PREFIX']}:"), key
        if key.endswith(":queue") or key.endswith(":scheduled") or key.endswith(":leases"):
            assert all(UUID_RE.match(m) for m in value), (key, value)  # type: ignore[union-attr]
    assert set(engine.queue_ids("echo")) == {str(queued.pk)}
    assert set(engine.queue_ids("other")) == {str(deduped.pk)}
    in_redis = {m for v in dump.values() if isinstance(v, list) for m in v if UUID_RE.match(m)}
    assert ids <= in_redis
    for job in (queued, scheduled, deduped):
        text = raw_payload(job.pk)
        assert json.loads(text) == payload
        assert not text.startswith(("\x80", "gAS", "(dp"))  # pickle protocols, raw or base64


# -- handlers only from the registry --------------------------------------------------------


@pytest.mark.parametrize("topic", ["os.system", "subprocess.call", "builtins.eval", "tabnanny.check"])
def test_import_paths_are_not_topics(topic):
    module = topic.split(".")[0]
    was_imported = module in sys.modules
    with pytest.raises(UnknownTopic, match="Unknown topic"):
        Job.objects.enqueue(topic, {"cmd": "touch /tmp/pwned"})
    assert not Job.objects.exists()
    assert not Topic.objects.filter(name=topic).exists()
    assert redis_dump() == {}
    assert (module in sys.modules) == was_imported


MALFORMED_TOPICS = ["os:system", "__import__", "os/system", "os system", "OS.SYSTEM", "a..b", "", "-rf"]


@pytest.mark.parametrize("topic", MALFORMED_TOPICS)
def test_malformed_topic_names_are_refused(topic):
    with pytest.raises(InvalidJob, match="Invalid topic name"):
        Job.objects.enqueue(topic, {})
    assert not Job.objects.exists()


@pytest.mark.parametrize("isolation", ["inline", "process"])
def test_forged_job_without_a_handler_fails_and_imports_nothing(isolation):
    target = "tabnanny"
    assert target not in sys.modules, "pick a module the suite has not imported"
    Topic.objects.create(name=f"{target}.check", isolation=isolation, max_attempts=1)
    forged = Job.objects.create(topic_id=f"{target}.check", payload={"file": "/etc/passwd"}, max_attempts=1)
    engine.push_job(forged)
    Worker(topics=[f"{target}.check"], burst=True, install_signals=False, isolation=isolation).run()
    forged.refresh_from_db()
    assert forged.status == "failed"
    assert "No handler" in forged.error
    execution = forged.executions.get()
    assert "No handler" in execution.error
    assert target not in sys.modules


# -- Redis keys namespaced by the prefix ----------------------------------------------------


def test_two_prefixes_on_one_redis_never_see_each_others_jobs(tmp_path):
    """Project A runs in this process on the test database; project B is another project
    (its own SQLite database, its own prefix) on the same Redis, run as subprocesses."""
    prefix_a = settings.JOBQUEUE["PREFIX"]
    prefix_b = f"{prefix_a}-other"
    db_b = tmp_path / "project_b.sqlite3"
    env_b = child_env(PREFIX=prefix_b)
    env_b.update(JOBQUEUE_TEST_DB="sqlite", JOBQUEUE_TEST_SQLITE_NAME=str(db_b))

    def run_b(*args: str) -> str:
        done = subprocess.run(manage_command(*args), cwd=REPO_ROOT, env=env_b, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    run_b("migrate", "--verbosity", "0")
    run_b("createjob", "echo", '{"project": "b"}')
    job_a = Job.objects.enqueue("echo", {"project": "a"})

    keys_a, keys_b = redis_dump(prefix_a), redis_dump(prefix_b)
    assert set(redis_dump()) == set(keys_a) | set(keys_b)
    queue_a = keys_a[f"{prefix_a}:{{echo}}:queue"]
    queue_b = keys_b[f"{prefix_b}:{{echo}}:queue"]
    assert queue_a == [str(job_a.pk)]
    assert len(queue_b) == 1 and queue_b != queue_a

    Worker(topics=["echo"], burst=True, install_signals=False).run()
    job_a.refresh_from_db()
    assert job_a.status == "succeeded"
    assert redis_dump(prefix_b)[f"{prefix_b}:{{echo}}:queue"] == queue_b  # B's job left alone

    run_b("jobworker", "--topics", "echo", "--burst")
    with sqlite3.connect(db_b) as conn:
        rows = conn.execute("SELECT id, status, payload FROM jobqueue_job").fetchall()
    assert [(uuid.UUID(r[0]) == uuid.UUID(queue_b[0]), r[1], json.loads(r[2])) for r in rows] == [
        (True, "succeeded", {"project": "b"})
    ]
    assert Job.objects.get().pk == job_a.pk  # B's worker wrote nothing here
    assert engine.queue_ids("echo") == []


# -- enqueue(): valid input is stored, invalid input writes nothing ---------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    # PostgreSQL's jsonb keeps numbers as decimals: a float it would print in exponent form above
    # 2**53 comes back as a (different) int, so floats stay where their decimal text is exact.
    | st.floats(min_value=-1e15, max_value=1e15, allow_nan=False)
    | st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)
    | st.just("\\u0000 is six characters, not a NUL")
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                              max_size=8), children, max_size=4),
    max_leaves=12,
)

PROPERTY = hsettings(max_examples=40, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])


def _state() -> tuple[int, dict[str, object]]:
    return Job.objects.count(), redis_dump()


@PROPERTY
@given(
    payload=json_values,
    priority=st.none() | st.integers(min_value=-100, max_value=100),
    entity_id=st.none() | st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1,
                                  max_size=40),
    delay=st.none() | st.floats(min_value=0, max_value=1e6),
    max_attempts=st.none() | st.integers(min_value=1, max_value=50),
)
def test_valid_enqueue_writes_a_row_and_a_redis_entry(payload, priority, entity_id, delay, max_attempts):
    if entity_id:  # an entity left active by an earlier example would be deduplicated
        Job.objects.filter(entity_id=entity_id).delete()
    job = Job.objects.enqueue("echo", payload, priority=priority, entity_id=entity_id, delay=delay,
                              max_attempts=max_attempts)
    row = Job.objects.get(pk=job.pk)
    stored = {} if payload is None else payload  # enqueue()'s documented default
    assert row.payload == stored
    assert json.loads(raw_payload(job.pk)) == stored
    assert row.priority == (Topic.objects.get(name="echo").default_priority if priority is None else priority)
    assert row.max_attempts == (max_attempts or Topic.objects.get(name="echo").max_attempts)
    r = engine.get_redis()
    keys = engine.TopicKeys("echo")
    if row.status == "queued":
        assert r.zscore(keys.queue, str(job.pk)) is not None
    else:
        assert row.status == "scheduled"
        assert r.zscore(keys.scheduled, str(job.pk)) is not None
    if entity_id:
        assert r.hget(keys.entities, entity_id).decode() == str(job.pk)


def _naive() -> dt.datetime:
    return dt.datetime(2030, 1, 1)  # noqa: DTZ001 - the point: naive datetimes are refused


invalid_calls = st.one_of(
    st.tuples(st.just("payload"), st.sampled_from([{1, 2}, b"bytes", object(), math.nan, {"x": math.inf},
                                                   {"s": "\ud800"}, {"k": "\x00"}, {(1, 2): 3}]),
              st.just(InvalidPayload)),
    st.tuples(st.just("priority"), st.one_of(st.integers(min_value=101), st.integers(max_value=-101),
                                             st.booleans(), st.floats(allow_nan=False), st.text(max_size=3)),
              st.just(InvalidJob)),
    st.tuples(st.just("entity_id"), st.one_of(st.just(""), st.integers(), st.text(min_size=256, max_size=300),
                                              st.text(min_size=1, max_size=5).map(lambda s: s + "\n")),
              st.just(InvalidJob)),
    st.tuples(st.just("max_attempts"), st.one_of(st.integers(max_value=0), st.booleans(), st.just("3")),
              st.just(InvalidJob)),
    st.tuples(st.just("timeout"), st.one_of(st.integers(max_value=0), st.just(1.5)), st.just(InvalidJob)),
    st.tuples(st.just("delay"), st.one_of(st.floats(max_value=-0.001), st.just(math.nan), st.just("5s")),
              st.just(InvalidJob)),
    st.tuples(st.just("run_after"), st.one_of(st.just("tomorrow"), st.builds(_naive)), st.just(InvalidJob)),
    st.tuples(st.just("topic"), st.one_of(st.text(max_size=5).filter(lambda s: not re.match(r"^[a-z0-9]", s)),
                                          st.integers(), st.just("no-such-topic")), st.just(InvalidJob)),
)


@PROPERTY
@given(call=invalid_calls)
def test_invalid_enqueue_raises_and_writes_nothing(call):
    name, value, error = call
    kwargs = {"topic": "echo", "payload": {"ok": True}, name: value}
    before = _state()
    with pytest.raises(error):
        Job.objects.enqueue(**kwargs)
    assert _state() == before


def test_payload_over_the_limit_is_refused_before_writing():
    before = _state()
    with jobqueue_settings(MAX_PAYLOAD_BYTES=64), pytest.raises(PayloadTooLarge, match="limit is 64 bytes"):
        Job.objects.enqueue("echo", {"blob": "x" * 100})
    assert _state() == before


# -- API tokens: nobody issues a token that can do more than they can -------------------------

TOKEN_ADD = "/admin/jobqueue/apitoken/add/"


def _issue_in_admin(issuer, user) -> tuple[int, str, list[str]]:
    """POST the token admin's add form as ``issuer`` for ``user``: status, page, form errors."""
    response = client_for(issuer).post(TOKEN_ADD, {"name": "mine", "user": user.pk})
    adminform = response.context.get("adminform") if response.context else None  # None: the key's page
    errors = adminform.form.errors.get("user", []) if adminform else []
    return response.status_code, response.content.decode(), list(errors)


def test_a_token_issuer_cannot_issue_one_for_the_superuser():
    root = make_user("root", superuser=True)
    clerk = make_user("clerk", "jobqueue.add_apitoken", "jobqueue.view_apitoken")
    job = Job.objects.enqueue("echo", {"n": 1})
    status, page, errors = _issue_in_admin(clerk, root)
    assert status == 200 and errors
    assert "jq_" not in page and not ApiToken.objects.exists()
    # Nothing else lets the clerk act as the superuser on the API: the job is untouched.
    assert Job.objects.get(pk=job.pk).status == "queued"


def test_issuing_for_others_needs_its_permission_and_never_grants_more():
    issuer = make_user("issuer", "jobqueue.add_apitoken", "jobqueue.issue_token_for_others",
                       "jobqueue.view_job", "jobqueue.cancel_job")
    lesser = make_user("lesser", "jobqueue.view_job")
    greater = make_user("greater", "jobqueue.view_job", "jobqueue.delete_job")
    inactive = make_user("inactive", "jobqueue.view_job")
    User.objects.filter(pk=inactive.pk).update(is_active=False)
    for target in (greater, make_user("root", superuser=True), inactive):
        status, page, errors = _issue_in_admin(issuer, target)
        assert status == 200 and errors, target.username
    assert not ApiToken.objects.exists()
    status, page, errors = _issue_in_admin(issuer, lesser)
    assert (status, errors) == (200, []) and "jq_" in page
    assert ApiToken.objects.get().user == lesser
    # Without the permission, not even for a user with fewer permissions.
    plain = make_user("plain", "jobqueue.add_apitoken", "jobqueue.view_job", "jobqueue.cancel_job")
    assert _issue_in_admin(plain, lesser)[2]
    assert ApiToken.objects.count() == 1


# -- entity dedupe: a hit shows and changes only what the caller may ---------------------------


def test_an_entity_dedupe_hit_discloses_and_changes_nothing_the_caller_may_not():
    theirs = Job.objects.enqueue("echo", {"card": "4111-secret"}, entity_id="invoice-7", priority=1)
    Job.objects.filter(pk=theirs.pk).update(error="attempt 1: secret-error", result={"partial": "secret-result"})
    key = ApiToken.objects.issue(make_user("enqueuer", "jobqueue.add_job"))[1]
    client = Client(headers={"Authorization": f"Bearer {key}"})
    assert client.get(f"/jobs/api/jobs/{theirs.pk}").status_code == 403

    body = {"topic": "echo", "entity_id": "invoice-7", "priority": 100, "payload": {"mine": True}}
    response = client.post("/jobs/api/jobs/", body, content_type="application/json")
    assert response.status_code == 409, response.content
    assert response.json()["error"]["code"] == "duplicate_job"
    assert response.json()["error"]["details"] == {"existing_id": str(theirs.pk)}
    assert "secret" not in response.content.decode()
    stored = Job.objects.get()
    assert (stored.pk, stored.priority, stored.payload) == (theirs.pk, 1, {"card": "4111-secret"})
    assert engine.queue_ids("echo") == [str(theirs.pk)]


# -- chaining into the shell topic needs its permission -----------------------------------------


def test_a_topic_editor_cannot_chain_into_the_shell_topic(tmp_path):
    marker = tmp_path / "pwned"
    editor = make_user("editor", "jobqueue.view_topic", "jobqueue.change_topic", "jobqueue.add_job",
                       "jobqueue.view_job")
    echo = Topic.objects.resolve("echo")  # its handler returns its payload
    with jobqueue_settings(SHELL_TOPIC=True):
        Topic.objects.resolve("shell")  # a worker refuses a topic without a row
        response = client_for(editor).post(topic_url(echo), topic_form(echo, next_topic="shell"))
        assert response.status_code == 200
        assert "enqueue_shell_job" in " ".join(response.context["adminform"].form.errors["next_topic"])
        assert Topic.objects.get(name="echo").next_topic == ""

        # Nor may the editor enqueue into a chain that leads there, whoever set it up.
        Topic.objects.filter(name="echo").update(next_topic="shell")
        client = Client(headers={"Authorization": f"Bearer {ApiToken.objects.issue(editor)[1]}"})
        body = {"topic": "echo", "payload": {"argv": ["touch", str(marker)]}}
        response = client.post("/jobs/api/jobs/", body, content_type="application/json")
        assert response.status_code == 403, response.content
        assert "enqueue_shell_job" in response.json()["error"]["message"]
        assert not Job.objects.exists()
        Worker(topics=["echo", "shell"], burst=True, install_signals=False).run()
    assert not marker.exists()


@pytest.mark.parametrize("isolation", ["inline", "process"])
def test_a_result_cannot_chain_into_the_shell_topic(tmp_path, isolation):
    """A handler that returns its payload (as echo does) must not turn a caller's payload into a
    shell job: a chain read from a result's data never leads into a protected topic."""
    marker = tmp_path / "pwned"
    key = ApiToken.objects.issue(make_user("enqueuer", "jobqueue.add_job"))[1]
    client = Client(headers={"Authorization": f"Bearer {key}"})
    payload = {"next_topic": "shell", "data": {"argv": ["touch", str(marker)]}}
    with jobqueue_settings(SHELL_TOPIC=True):
        Topic.objects.resolve("shell")
        response = client.post("/jobs/api/jobs/", {"topic": "echo", "payload": payload, "max_attempts": 1},
                               content_type="application/json")
        assert response.status_code == 201, response.content
        Worker(topics=["echo", "shell"], burst=True, install_signals=False, isolation=isolation).run()
    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == "failed" and "shell" in job.error
    assert not Job.objects.filter(topic_id="shell").exists()
    assert not marker.exists()


def test_a_process_result_that_looks_like_the_wire_form_of_next_is_a_plain_result(tmp_path):
    marker = tmp_path / "pwned"
    payload = {"__next__": [{"topic": "shell", "data": {"argv": ["touch", str(marker)]}, "options": {}}]}
    with jobqueue_settings(SHELL_TOPIC=True):
        Topic.objects.resolve("shell")
        job = Job.objects.enqueue("echo", payload)
        Worker(topics=["echo", "shell"], burst=True, install_signals=False, isolation="process").run()
    job.refresh_from_db()
    assert (job.status, job.result) == ("succeeded", payload)
    assert list(Job.objects.all()) == [job]
    assert not marker.exists()
