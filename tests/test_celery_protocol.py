"""How the bridge reads one Celery message (``jobqueue.contrib.celery.protocol``), without a
broker: the edge cases a real sender rarely produces. The real messages are in
``test_celery_bridge.py``."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest

from jobqueue.contrib.celery.protocol import REASONS, JobRequest, Refusal, job_id_for, job_priority, parse

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.timezone.utc)
TASKS = {"app.add": "echo"}


def read(body, headers=None, content_type="application/json", encoding="utf-8", priority=None, transport="amqp"):
    task_id = str(uuid.uuid4())
    return parse(content_type=content_type, content_encoding=encoding,
                 headers={"task": "app.add", "id": task_id, **(headers or {})},
                 body=json.dumps(body).encode() if not isinstance(body, bytes) else body,
                 priority=priority, transport=transport, tasks=TASKS, now=NOW)


def test_a_protocol_2_message_is_a_job_request():
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    request = read([[1, "a"], {"k": {"n": None}}, embed], headers={"id": "5a3e1d7c-0000-4000-8000-000000000001"})
    assert isinstance(request, JobRequest)
    assert request.topic == "echo" and request.task == "app.add"
    assert request.payload == {"args": [1, "a"], "kwargs": {"k": {"n": None}}}
    assert request.job_id == uuid.UUID("5a3e1d7c-0000-4000-8000-000000000001")
    assert request.priority is None and request.run_after is None


def test_a_body_of_two_parts_is_read_too():
    assert read([[1], {}]).payload == {"args": [1], "kwargs": {}}


def test_a_naive_eta_is_utc_and_an_aware_one_is_kept():
    assert read([[], {}, {}], headers={"eta": "2030-01-01T10:00:00"}).run_after == dt.datetime(
        2030, 1, 1, 10, tzinfo=dt.timezone.utc)
    aware = read([[], {}, {}], headers={"eta": "2030-01-01T10:00:00+02:00"}).run_after
    assert aware == dt.datetime(2030, 1, 1, 8, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize("headers, reason", [
    ({"expires": "2026-06-01T11:59:59+00:00"}, "expired"),
    ({"expires": "2026-06-01T12:00:00+00:00"}, "expired"),
    ({"expires": "2026-06-01T13:00:00+00:00", "eta": "2026-06-01T13:00:00+00:00"}, "expired"),
    ({"eta": "tomorrow"}, "malformed"),
    ({"eta": 1234}, "malformed"),
    ({"task": None}, "no-task"),
    ({"task": ""}, "no-task"),
    ({"id": 42}, "no-id"),
    ({"task": "app.other"}, "unmapped"),
])
def test_headers_that_refuse_a_message(headers, reason):
    refusal = read([[], {}, {}], headers=headers)
    assert isinstance(refusal, Refusal) and refusal.reason == reason
    assert reason in REASONS


@pytest.mark.parametrize("body, reason", [
    ({"args": []}, "malformed"),
    ([[], {}, {}, {}], "malformed"),
    (["a", {}, {}], "malformed"),
    ([[], [], {}], "malformed"),
    ([[], {}, []], "malformed"),
    ([[{"__type__": "pickle", "__value__": "x"}], {}, {}], "malformed"),
    (b"\xff\xfe", "malformed"),
    ([[], {}, {"chain": [{"task": "x"}]}], "canvas"),
    ([[], {}, {"chord": {"task": "x"}}], "canvas"),
    ([[], {}, {"errbacks": [{"task": "x"}]}], "canvas"),
])
def test_bodies_that_refuse_a_message(body, reason):
    refusal = read(body)
    assert isinstance(refusal, Refusal) and refusal.reason == reason


@pytest.mark.parametrize("content_type, encoding", [
    ("application/x-python-serialize", "binary"),
    ("application/x-yaml", "utf-8"),
    ("application/x-msgpack", "binary"),
    ("application/json", "latin-1"),
    (None, None),
])
def test_only_json_in_utf_8_is_read(content_type, encoding):
    refusal = read([[], {}, {}], content_type=content_type, encoding=encoding)
    assert isinstance(refusal, Refusal) and refusal.reason == "content-type"


def test_a_protocol_1_message_is_refused_with_its_own_reason():
    task_id = str(uuid.uuid4())
    refusal = parse(content_type="application/json", content_encoding="utf-8", headers={},
                    body=json.dumps({"task": "app.add", "id": task_id, "args": [], "kwargs": {}}).encode(),
                    priority=None, transport="amqp", tasks=TASKS, now=NOW)
    assert refusal == Refusal("protocol-1", "the task and id are in the body, not the headers", task_id, "app.add")


def test_typed_values_become_strings():
    body = [[{"__type__": "uuid", "__value__": {"hex": "5a3e1d7c00004000800000000000000a"}},
             {"__type__": "decimal", "__value__": "3.14"}, {"__type__": "base64", "__value__": "AAE="}],
            {"when": {"__type__": "datetime", "__value__": "2026-01-01T00:00:00"}}, None]
    assert read(body).payload == {
        "args": ["5a3e1d7c-0000-4000-8000-00000000000a", "3.14", "AAE="],
        "kwargs": {"when": "2026-01-01T00:00:00"},
    }


def test_a_task_id_that_is_not_a_uuid_names_the_same_job_every_time():
    assert job_id_for("order-42") == job_id_for("order-42") != job_id_for("order-43")
    assert job_id_for("order-42").version == 5
    some = uuid.uuid4()
    assert job_id_for(str(some)) == some


@pytest.mark.parametrize("priority, transport, expected", [
    (None, "amqp", None), (None, "redis", None), ("5", "amqp", None), (True, "amqp", None),
    (0, "amqp", 0), (9, "amqp", 9), (255, "amqp", 100), (-3, "amqp", 0),
    (0, "redis", 0), (3, "redis", -3), (9, "redis", -9), (12, "redis", -9), (-1, "redis", 0),
])
def test_priorities_map_onto_jobqueues_order(priority, transport, expected):
    assert job_priority(priority, transport) == expected
