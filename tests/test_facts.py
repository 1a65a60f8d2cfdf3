"""Each fact that several parts share is stated once: the topic name's pattern and
length, the integer bounds, the shell topic's name and permission, a topic's runtime
fields, a new job's defaults.

The strongest proof is :func:`test_every_user_follows_the_constants`: a fresh Python
process changes the values of :mod:`jobqueue.constants` and :mod:`jobqueue.conf`
before anything else reads them, and every place that uses a fact must follow.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from django.contrib.auth.models import Permission, User
from django.core.exceptions import ValidationError
from django.core.management import load_command_class
from django.test import Client
from django.urls import reverse
from hypothesis import given, settings
from hypothesis import strategies as st

from jobqueue import conf, constants, registry, scripts_topics, shell
from jobqueue.admin.forms import PriorityForm, TopicForm
from jobqueue.admin.topics import TopicAdmin
from jobqueue.api.schema import build_schema
from jobqueue.engine.queue import PRIORITY_SHIFT
from jobqueue.engine.scripts import SCRIPT_NAMES, source
from jobqueue.exceptions import InvalidJob
from jobqueue.models import FRESH_JOB, Isolation, Job, Topic
from jobqueue.permissions import PROTECTED_TOPICS
from jobqueue.transitions import fastsql
from jobqueue.validation import TOPIC_NAME_PATTERN, TOPIC_NAME_RE, validate_topic_name
from tests.workerutil import REPO_ROOT, child_env

# -- the topic name -----------------------------------------------------------------------

DOCUMENT = build_schema("/jobs/api/")
TOPIC_SCHEMA = DOCUMENT["components"]["schemas"]["JobCreate"]["properties"]["topic"]


def _valid(name: str) -> bool:
    try:
        validate_topic_name(name)
    except InvalidJob:
        return False
    return True


def _schema_accepts(name: str) -> bool:
    # JSON schema's "$" is the end of the string; Python's also matches before a final "\n".
    pattern = TOPIC_SCHEMA["pattern"].removesuffix("$") + r"\Z"
    return re.search(pattern, name) is not None and len(name) <= TOPIC_SCHEMA["maxLength"]


def _model_accepts(name: str) -> bool:
    try:
        Topic(name=name).clean_fields(exclude=[f.name for f in Topic._meta.fields if f.name != "name"])
    except ValidationError:
        return False
    return True


def test_the_schema_states_the_topic_name_of_validation():
    assert TOPIC_SCHEMA == {
        "type": "string",
        "pattern": TOPIC_NAME_PATTERN,
        "maxLength": constants.TOPIC_NAME_MAX_LENGTH,
    }
    topic_path_parameter = DOCUMENT["paths"]["/stats/{topic}"]["get"]["parameters"][0]
    assert topic_path_parameter["schema"] == TOPIC_SCHEMA
    assert Topic._meta.get_field("name").max_length == constants.TOPIC_NAME_MAX_LENGTH
    assert Topic._meta.get_field("next_topic").max_length == constants.TOPIC_NAME_MAX_LENGTH


NAME_CHARACTERS = "az09_.-A/ é"


@settings(max_examples=400, deadline=None)
@given(
    st.text(alphabet=NAME_CHARACTERS, min_size=0, max_size=8)
    | st.from_regex(TOPIC_NAME_PATTERN, fullmatch=True).filter(lambda name: "\n" not in name)
    | st.integers(constants.TOPIC_NAME_MAX_LENGTH - 2, constants.TOPIC_NAME_MAX_LENGTH + 2).map(
        lambda n: "a" * n
    )
)
def test_validation_the_schema_and_the_model_accept_the_same_topic_names(name):
    valid = _valid(name)
    assert _schema_accepts(name) == valid
    assert _model_accepts(name) == valid
    assert (TOPIC_NAME_RE.match(name) is not None) == valid


@pytest.mark.parametrize("name", ["a..b", "a" * (constants.TOPIC_NAME_MAX_LENGTH + 1), ".a", "A", "a\n"])
def test_a_name_refused_by_enqueue_is_refused_everywhere(name):
    assert not _valid(name)
    assert not _schema_accepts(name)
    assert not _model_accepts(name)


@pytest.mark.django_db
def test_the_admin_refuses_a_topic_name_that_enqueue_refuses():
    form = TopicForm(data={"name": "a..b", **{f: getattr(Topic(), f) for f in registry.TOPIC_FIELDS}})
    assert not form.is_valid()
    assert "name" in form.errors


# -- bounds ---------------------------------------------------------------------------------


def test_the_schema_states_the_bounds_of_the_constants():
    schemas = DOCUMENT["components"]["schemas"]
    create, job, progress = schemas["JobCreate"]["properties"], schemas["Job"]["properties"], schemas["Progress"]
    bounds = {"minimum": constants.MIN_PRIORITY, "maximum": constants.MAX_PRIORITY}
    assert create["priority"] == job["priority"] == {"type": "integer", **bounds}
    assert create["max_attempts"]["maximum"] == create["timeout"]["maximum"] == constants.MAX_INT
    assert (job["progress"]["minimum"], job["progress"]["maximum"]) == (constants.MIN_PROGRESS, constants.MAX_PROGRESS)
    assert progress["properties"]["message"]["maxLength"] == constants.PROGRESS_MESSAGE_MAX_LENGTH
    assert progress["properties"]["stage"]["maxLength"] == constants.STAGE_MAX_LENGTH
    assert create["entity_id"]["maxLength"] == constants.ENTITY_ID_COLUMN_LENGTH


def test_the_models_columns_and_constraints_hold_the_constants():
    fields = {name: Job._meta.get_field(name) for name in ("progress_message", "stage", "entity_id")}
    assert fields["progress_message"].max_length == constants.PROGRESS_MESSAGE_MAX_LENGTH
    assert fields["stage"].max_length == constants.STAGE_MAX_LENGTH
    assert fields["entity_id"].max_length == constants.ENTITY_ID_COLUMN_LENGTH
    assert conf.DEFAULTS["ENTITY_ID_MAX_LENGTH"] <= constants.ENTITY_ID_COLUMN_LENGTH
    checks = {c.name: dict(c.condition.children) for c in [*Job._meta.constraints, *Topic._meta.constraints]
              if hasattr(c, "condition") and c.name.endswith("_range")}
    priority = {"priority__gte": constants.MIN_PRIORITY, "priority__lte": constants.MAX_PRIORITY}
    assert checks["jobqueue_job_priority_range"] == priority
    assert checks["jobqueue_topic_priority_range"] == {f"default_{k}": v for k, v in priority.items()}
    assert checks["jobqueue_job_progress_range"] == {
        "progress__gte": constants.MIN_PROGRESS,
        "progress__lte": constants.MAX_PROGRESS,
    }


def test_the_priority_help_is_one_text():
    text = str(Job._meta.get_field("priority").help_text)
    assert f"{constants.MIN_PRIORITY}..{constants.MAX_PRIORITY}" in text
    parser = load_command_class("jobqueue", "createjob").create_parser("manage.py", "createjob")
    assert text in " ".join(parser.format_help().split())
    assert str(PriorityForm.base_fields["priority"].help_text) == text


def test_the_succeed_statement_writes_the_top_of_the_progress_range():
    assert "{const.MAX_PROGRESS}" in fastsql.QUERIES["succeed"]
    assert re.search(rf"progress\W* = {constants.MAX_PROGRESS},", fastsql.statement("succeed", "default"))


@pytest.mark.parametrize("name", [n for n in SCRIPT_NAMES if "SHIFT" in source(n)])
def test_every_lua_script_scores_a_job_as_the_engine_reads_it(name):
    text = source(name)  # with the snippets it includes, which score jobs too
    shifts = re.findall(r"local \w*SHIFT = (\d+)", text)
    assert shifts and all(int(shift) == PRIORITY_SHIFT for shift in shifts)
    offsets = re.findall(r"\((\d+) - priority\) \* \w*SHIFT", text)
    assert all(int(offset) == constants.MAX_PRIORITY for offset in offsets)


# -- the shell topic --------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_shell_permission_is_the_one_the_models_declare():
    declared = dict(Job._meta.permissions)
    assert constants.SHELL_PERMISSION_CODENAME in declared
    assert constants.SHELL_PERMISSION == f"{Job._meta.app_label}.{constants.SHELL_PERMISSION_CODENAME}"
    user = User.objects.create_user("sheller")
    user.user_permissions.add(Permission.objects.get(codename=constants.SHELL_PERMISSION_CODENAME))
    assert User.objects.get(pk=user.pk).has_perm(constants.SHELL_PERMISSION)
    assert PROTECTED_TOPICS == {constants.SHELL_TOPIC: constants.SHELL_PERMISSION}
    assert shell.PERMISSION == constants.SHELL_PERMISSION
    assert registry.get(constants.SHELL_TOPIC).func is scripts_topics.run_shell


# -- a topic's runtime fields ---------------------------------------------------------------


def test_a_topics_runtime_fields_are_one_list():
    assert registry.TOPIC_FIELDS == ("description", *registry.RUNTIME_FIELDS)
    assert TopicForm._meta.fields == ["name", *registry.TOPIC_FIELDS]
    topic_fields = {f.name for f in Topic._meta.fields}
    assert set(registry.RUNTIME_FIELDS) <= topic_fields
    assert TopicAdmin.runtime_fields == registry.RUNTIME_FIELDS


@pytest.mark.django_db
def test_the_admin_shows_and_keeps_every_runtime_field():
    admin = User.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(admin)
    topic = Topic.objects.create(name="facts")
    page = client.get(reverse("admin:jobqueue_topic_change", args=[topic.pk])).content.decode()
    for field in registry.RUNTIME_FIELDS:
        assert f'name="{field}"' in page, field


# -- a new job's defaults ---------------------------------------------------------------------


def test_topic_and_job_defaults_come_from_the_settings_defaults():
    for name in ("max_attempts", "timeout"):
        setting = conf.DEFAULTS[f"DEFAULT_{name.upper()}"]
        assert Topic._meta.get_field(name).default == Job._meta.get_field(name).default == setting
    assert Topic._meta.get_field("retry_backoff").default == conf.DEFAULTS["DEFAULT_RETRY_BACKOFF"]
    assert Topic._meta.get_field("isolation").default == conf.DEFAULTS["DEFAULT_ISOLATION"]
    assert conf.DEFAULTS["DEFAULT_ISOLATION"] in Isolation.values
    assert FRESH_JOB == {
        f.attname: f.get_default() for f in Job._meta.concrete_fields if f.attname in FRESH_JOB
    }


# -- every user follows the constants ---------------------------------------------------------

#: Values unlike the real ones, set before any part of jobqueue reads them.
CHANGED = {
    "constants": {
        "TOPIC_NAME_MAX_LENGTH": 30,
        "MIN_PRIORITY": -7,
        "MAX_PRIORITY": 7,
        "MAX_PROGRESS": 40,
        "MAX_INT": 1000,
        "STAGE_MAX_LENGTH": 9,
        "PROGRESS_MESSAGE_MAX_LENGTH": 11,
        "ENTITY_ID_COLUMN_LENGTH": 13,
        "SHELL_TOPIC": "sh",
        "SHELL_PERMISSION_CODENAME": "run_sh",
        "SHELL_PERMISSION": "jobqueue.run_sh",
    },
    "conf": {"DEFAULT_MAX_ATTEMPTS": 4, "DEFAULT_TIMEOUT": 33, "DEFAULT_RETRY_BACKOFF": 1.5},
}

CHANGED_WORLD = r"""
import importlib.util, json, os, sys

changed = json.loads(sys.argv[1])
for name in ("constants", "conf"):  # conf reads constants: in that order
    spec = importlib.util.spec_from_file_location(f"jobqueue.{name}", os.path.join("jobqueue", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    for key, value in changed[name].items():
        setattr(module, key, value)
    if name == "conf":
        module.DEFAULTS.update({key: value for key, value in changed[name].items()})
        module.DEFAULTS["ENTITY_ID_MAX_LENGTH"] = changed["constants"]["ENTITY_ID_COLUMN_LENGTH"]

import django
django.setup()

from django.core.management import load_command_class

from jobqueue import permissions, registry, scripts_topics, shell, validation
from jobqueue.api.schema import build_schema
from jobqueue.api.errors import ApiError
from jobqueue.api.serializers import enqueue_arguments
from jobqueue.checks import check_settings
from jobqueue.exceptions import InvalidJob
from jobqueue.management.commands._utils import priority
from jobqueue.models import Job, Topic
from jobqueue.progress import record_progress
from jobqueue.transitions import fastsql
from django.test.utils import override_settings

def refused(call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except Exception as exc:
        return str(exc)
    return None

schemas = build_schema("/")["components"]["schemas"]
parser = load_command_class("jobqueue", "createjob").create_parser("manage.py", "createjob")
with override_settings(JOBQUEUE={"SHELL_TOPIC": True}):
    warnings = [m.msg for m in check_settings()]
print(json.dumps({
    "name_ok": bool(validation.TOPIC_NAME_RE.match("a" * 30)),
    "name_too_long": refused(validation.validate_topic_name, "a" * 31),
    "schema_topic": schemas["JobCreate"]["properties"]["topic"],
    "schema_priority": schemas["JobCreate"]["properties"]["priority"],
    "schema_job_priority": schemas["Job"]["properties"]["priority"],
    "schema_max_attempts": schemas["JobCreate"]["properties"]["max_attempts"]["maximum"],
    "schema_progress": schemas["Progress"]["properties"]["progress"]["maximum"],
    "schema_message": schemas["Progress"]["properties"]["message"]["maxLength"],
    "schema_stage": schemas["Progress"]["properties"]["stage"]["maxLength"],
    "schema_entity_id": schemas["JobCreate"]["properties"]["entity_id"]["maxLength"],
    "topic_name_length": Topic._meta.get_field("name").max_length,
    "next_topic_length": Topic._meta.get_field("next_topic").max_length,
    "stage_length": Job._meta.get_field("stage").max_length,
    "message_length": Job._meta.get_field("progress_message").max_length,
    "entity_id_length": Job._meta.get_field("entity_id").max_length,
    "constraints": {c.name: dict(c.condition.children) for c in [*Job._meta.constraints, *Topic._meta.constraints]
                    if c.name.endswith("_range")},
    "priority_help": str(Job._meta.get_field("priority").help_text),
    "createjob_help": " ".join(parser.format_help().split()),
    "command_priority": refused(priority, "8"),
    "validate_priority": [refused(validation.validate_priority, 7), refused(validation.validate_priority, 8)],
    "handler_priority": refused(registry.handler, "t", priority=8),
    "max_int": refused(validation.validate_positive_int, 1001, "timeout"),
    "api_max_int": refused(enqueue_arguments, {"topic": "t", "max_attempts": 1001}),
    "progress_error": refused(record_progress, object(), "x"),
    "succeed_sql": fastsql.statement("succeed", "default"),
    "permissions": [list(p) for p in Job._meta.permissions],
    "protected": permissions.PROTECTED_TOPICS,
    "shell_spec": getattr(registry.get("sh"), "func", None) is scripts_topics.run_shell,
    "shell_refused": refused(Job.objects.build, "sh", {"command": "true"}),
    "w002": [m for m in warnings if "SHELL_TOPIC" in m],
    "defaults": [Topic._meta.get_field("max_attempts").default, Job._meta.get_field("max_attempts").default,
                 Topic._meta.get_field("timeout").default, Job._meta.get_field("timeout").default,
                 Topic._meta.get_field("retry_backoff").default],
}, default=str))
"""


@pytest.fixture(scope="module")
def changed_world():
    """What jobqueue says about itself in a process where :data:`CHANGED` holds."""
    env = {**child_env(), "PYTHONPATH": REPO_ROOT}
    done = subprocess.run([sys.executable, "-c", CHANGED_WORLD, json.dumps(CHANGED)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_user_follows_the_topic_name_length(changed_world):
    assert changed_world["name_ok"]
    assert "use 1-30 lowercase" in changed_world["name_too_long"]
    assert changed_world["schema_topic"]["maxLength"] == 30
    assert changed_world["topic_name_length"] == changed_world["next_topic_length"] == 30


def test_every_user_follows_the_priority_range(changed_world):
    bounds = {"type": "integer", "minimum": -7, "maximum": 7}
    assert changed_world["schema_priority"] == changed_world["schema_job_priority"] == bounds
    assert changed_world["constraints"]["jobqueue_job_priority_range"] == {"priority__gte": -7, "priority__lte": 7}
    assert changed_world["constraints"]["jobqueue_topic_priority_range"] == {
        "default_priority__gte": -7,
        "default_priority__lte": 7,
    }
    assert changed_world["priority_help"] == "-7..7; higher runs first."
    assert "-7..7; higher runs first." in changed_world["createjob_help"]
    assert "(-7..7)" in changed_world["command_priority"]
    assert changed_world["validate_priority"][0] is None
    assert "(-7..7)" in changed_world["validate_priority"][1]
    assert "(-7..7)" in changed_world["handler_priority"]


def test_every_user_follows_the_integer_and_text_bounds(changed_world):
    assert changed_world["schema_max_attempts"] == 1000
    assert "up to 1000" in changed_world["max_int"]
    assert "at most 1000" in changed_world["api_max_int"]
    assert changed_world["schema_message"] == changed_world["message_length"] == 11
    assert changed_world["schema_stage"] == changed_world["stage_length"] == 9
    assert changed_world["schema_entity_id"] == changed_world["entity_id_length"] == 13


def test_every_user_follows_the_progress_range(changed_world):
    assert changed_world["schema_progress"] == 40
    assert changed_world["constraints"]["jobqueue_job_progress_range"] == {"progress__gte": 0, "progress__lte": 40}
    assert "from 0 to 40" in changed_world["progress_error"]
    assert re.search(r"progress\W* = 40,", changed_world["succeed_sql"]), changed_world["succeed_sql"]


def test_every_user_follows_the_shell_topic(changed_world):
    assert ["run_sh", "Can enqueue a shell-topic job"] in changed_world["permissions"]
    assert not any(codename == "enqueue_shell_job" for codename, _ in changed_world["permissions"])
    assert changed_world["protected"] == {"sh": "jobqueue.run_sh"}
    assert changed_world["shell_spec"] is True
    assert "shell topic is disabled" in changed_world["shell_refused"]
    assert changed_world["w002"] and all("jobqueue.run_sh" in m for m in changed_world["w002"])


def test_every_user_follows_the_job_defaults(changed_world):
    assert changed_world["defaults"] == [4, 4, 33, 33, 1.5]
