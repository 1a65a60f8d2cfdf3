"""Every Lua file is loaded, documented, cluster-safe and run by the engine; every snippet
a script includes touches only the keys its caller passes from KEYS."""

from __future__ import annotations

import hashlib
import re
import uuid
from importlib import resources
from pathlib import Path

import pytest
import redis
import tomllib
from redis.client import Pipeline
from redis.cluster import ClusterPipeline, RedisCluster
from redis.commands.core import Script
from redis.crc import key_slot

from jobqueue import engine
from jobqueue.engine import TopicLock, metrics, scripts
from jobqueue.engine.scripts import SCRIPT_NAMES, LuaScript, compose, file_source, includes, snippet, source

LUA_DIR = resources.files("jobqueue.engine").joinpath("lua")
LUA_FILES = sorted(p.name[: -len(".lua")] for p in LUA_DIR.iterdir() if p.name.endswith(".lua"))
SNIPPETS = sorted(p.name[: -len(".lua")] for p in LUA_DIR.joinpath("lib").iterdir() if p.name.endswith(".lua"))
INCLUDING = [name for name in LUA_FILES if includes(file_source(name))]
CALL_RE = re.compile(r"redis\.call\(\s*'(\w+)'\s*(?:,\s*([^,)]+))?")
FUNCTION_RE = re.compile(r"^local function (\w+)\(([^)]*)\)$", re.MULTILINE)
# Commands that take no key: the only ones allowed without a KEYS[...] first argument.
KEYLESS = {"TIME"}


def header(name: str) -> list[str]:
    lines = source(name).splitlines()
    return lines[: next(i for i, line in enumerate(lines) if not line.startswith("--"))]


def body(name: str) -> str:
    return "\n".join(source(name).splitlines()[len(header(name)) :])


def code(text: str) -> str:
    """``text`` without its comments."""
    return re.sub(r"--[^\n]*", "", text)


def own_body(name: str) -> str:
    """The composed script's body less the snippets it includes (each checked on its own)."""
    text = body(name)
    for included in includes(file_source(name)):
        assert snippet(included).rstrip("\n") in text, f"{name}.lua runs without its snippet {included!r}"
        text = text.replace(snippet(included).rstrip("\n"), "")
    return text


def key_parameters(name: str) -> list[str]:
    """The parameters of the snippet's functions that name keys, as its opening comment lists them."""
    match = re.search(r"^-- Key parameters: (\w+(?:, \w+)*)$", snippet(name), re.MULTILINE)
    assert match, f"lib/{name}.lua's opening comment lists no key parameters"
    return match.group(1).split(", ")


def functions(name: str) -> dict[str, list[str]]:
    """The snippet's functions and their parameters."""
    return {f: [p.strip() for p in params.split(",") if p.strip()] for f, params in FUNCTION_RE.findall(snippet(name))}


def function_bodies(name: str) -> dict[str, str]:
    """Each snippet function's text, from its ``local function`` line to its closing ``end``."""
    text = code(snippet(name))
    starts = [(m.group(1), m.start()) for m in FUNCTION_RE.finditer(text)]
    bodies = {}
    for function, start in starts:
        end = re.compile(r"^end$", re.MULTILINE).search(text, start)
        assert end, f"lib/{name}.lua: {function} has no closing 'end' at the start of a line"
        bodies[function] = text[start : end.end()]
    return bodies


def call_arguments(text: str, function: str) -> list[list[str]]:
    """The arguments of every call of ``function`` in ``text`` (not its definition)."""
    found = []
    for match in re.finditer(rf"(?<![\w.]){function}\(", text):
        if text[: match.start()].endswith("local function "):
            continue
        args, depth, start, i = [], 0, match.end(), match.end()
        while True:
            char = text[i]
            if char == "'":
                i = text.index("'", i + 1)
            elif char in "([{":
                depth += 1
            elif char in ")]}" and depth:
                depth -= 1
            elif char == ")" or (char == "," and not depth):
                args.append(text[start:i].strip())
                start = i + 1
                if char == ")":
                    break
            i += 1
        found.append(args)
    return found


def documented_keys(name: str) -> dict[str, str]:
    """``{"KEYS[n]": its name}`` as the script's opening comment documents them."""
    return {f"KEYS[{n}]": role for n, role in re.findall(r"^-- KEYS\[(\d+)\]\s+(\w+)", "\n".join(header(name)), re.M)}


def test_every_lua_file_is_loaded_and_every_loaded_name_has_a_file():
    assert LUA_FILES, "no Lua files found"
    assert sorted(SCRIPT_NAMES) == LUA_FILES
    assert len(set(SCRIPT_NAMES)) == len(SCRIPT_NAMES)


@pytest.mark.parametrize("name", LUA_FILES)
def test_each_script_opens_with_its_keys_and_argv(name):
    head = "\n".join(header(name))
    assert len(header(name)) >= 3, f"{name}.lua must open with a comment saying what it does"
    assert "ARGV" in head, f"{name}.lua's opening comment lists no ARGV"
    documented = {int(n) for n in re.findall(r"KEYS\[(\d+)\]", head)}
    used = {int(n) for n in re.findall(r"KEYS\[(\d+)\]", body(name))}
    assert documented, f"{name}.lua's opening comment lists no KEYS"
    assert documented == set(range(1, max(documented) + 1)), f"{name}.lua: KEYS numbered with gaps"
    assert used == documented, f"{name}.lua uses KEYS {sorted(used)} but documents {sorted(documented)}"
    for n in re.findall(r"ARGV\[(\d+)\]", body(name)):
        assert f"ARGV[{n}]" in head, f"{name}.lua uses ARGV[{n}] without documenting it"


@pytest.mark.parametrize("name", LUA_FILES)
def test_no_script_builds_a_key_name(name):
    text = body(name)
    assert not re.search(r"['\"]jq[:']", text)
    # Concatenation is how a script would build a key name of its own.
    assert ".." not in re.sub(r"--[^\n]*", "", text).replace("...", ""), f"{name}.lua concatenates strings"
    # A snippet's commands touch its functions' key parameters, which the script gives from
    # KEYS (the snippet tests below); every command of the script's own lines touches KEYS.
    calls = CALL_RE.findall(own_body(name))
    assert calls, f"{name}.lua calls no Redis command"
    for command, first in calls:
        if command in KEYLESS:
            continue
        assert first.strip().startswith("KEYS["), f"{name}.lua: {command} on {first!r}, not on a KEYS entry"


def test_every_snippet_is_included_and_every_include_has_a_snippet():
    assert SNIPPETS, "no Lua snippets found"
    assert INCLUDING, "no script includes a snippet"
    assert sorted({included for name in INCLUDING for included in includes(file_source(name))}) == SNIPPETS


@pytest.mark.parametrize("name", SNIPPETS)
def test_each_snippet_only_defines_local_functions_of_the_keys_it_is_given(name):
    text = code(snippet(name))
    params = key_parameters(name)
    defined = functions(name)
    assert defined, f"lib/{name}.lua defines no function"
    assert "KEYS" not in text and "ARGV" not in text, f"lib/{name}.lua reads KEYS or ARGV: its caller passes keys"
    assert not re.search(r"['\"]jq[:']", text)
    assert ".." not in text.replace("...", ""), f"lib/{name}.lua concatenates strings"
    # Nothing runs at the top level: local functions and constants only.
    for line in text.splitlines():
        if line.strip() and not line.startswith((" ", "\t")):
            assert re.fullmatch(r"local function \w+\([^)]*\)|end|local [A-Z_]+ = \d+\s*", line), (
                f"lib/{name}.lua runs {line!r} at the top level")
    bodies = function_bodies(name)
    assert sorted(bodies) == sorted(defined)
    for function, function_text in bodies.items():
        calls = CALL_RE.findall(function_text)
        for command, first in calls:
            if command in KEYLESS:
                continue
            first = first.strip()
            assert first in params and first in defined[function], (
                f"lib/{name}.lua: {function} runs {command} on {first!r}, not on a key parameter of its own")
    # A key parameter is only ever a parameter, a command's key or passed on as the same
    # parameter of another of the snippet's functions: never set, built on or renamed.
    for param in params:
        seen = len(re.findall(rf"\b{param}\b", text))
        as_parameter = sum(param in function_params for function_params in defined.values())
        as_key = sum(first.strip() == param for _command, first in CALL_RE.findall(text))
        passed_on = sum(
            arg == param and function_params[i] == param
            for function, function_params in defined.items()
            for args in call_arguments(text, function)
            for i, arg in enumerate(args[: len(function_params)])
        )
        assert seen == as_parameter + as_key + passed_on, f"lib/{name}.lua uses its key parameter {param!r} otherwise"
    # Each function is called with all its parameters, here and in the scripts.
    for function, function_params in defined.items():
        for args in call_arguments(text, function):
            assert len(args) == len(function_params), f"lib/{name}.lua: {function}({', '.join(args)})"


@pytest.mark.parametrize("name", INCLUDING)
def test_a_script_gives_a_snippet_the_keys_its_parameters_name(name):
    """What a snippet function is given for a key parameter is the KEYS entry the script
    documents under that name (``queue`` is the script's queue key, and so on)."""
    text = code(own_body(name))
    keys = documented_keys(name)
    for included in includes(file_source(name)):
        params = key_parameters(included)
        called = 0
        for function, function_params in functions(included).items():
            for args in call_arguments(text, function):
                called += 1
                assert len(args) == len(function_params), f"{name}.lua: {function}({', '.join(args)})"
                for param, arg in zip(function_params, args, strict=True):
                    if param in params:
                        assert keys.get(arg) == param, f"{name}.lua gives {function} {arg!r} as its {param}"
        assert called, f"{name}.lua includes {included!r} but calls none of its functions"


def test_the_package_ships_every_lua_file_and_snippet():
    """A wheel holds what pyproject's package data names (globbed as setuptools does)."""
    package = Path(__file__).resolve().parents[1] / "jobqueue"
    pyproject = tomllib.loads((package.parent / "pyproject.toml").read_text(encoding="utf-8"))
    shipped = {path for pattern in pyproject["tool"]["setuptools"]["package-data"]["jobqueue"]
               for path in package.glob(pattern)}
    lua = set((package / "engine" / "lua").rglob("*.lua"))
    assert {package / "engine" / "lua" / "lib" / f"{name}.lua" for name in SNIPPETS} <= lua
    assert lua - shipped == set()


def test_a_script_calls_a_snippet_function_only_where_it_includes_the_snippet():
    for name in LUA_FILES:
        text = code(own_body(name))
        for included in SNIPPETS:
            called = [f for f in functions(included) if call_arguments(text, f)]
            assert not called or included in includes(file_source(name)), (
                f"{name}.lua calls {called} without '-- include: {included}'")


def test_a_script_runs_with_its_snippets_after_its_opening_comment():
    for name in INCLUDING:
        lines = file_source(name).splitlines(keepends=True)
        opening = len(header(name))
        assert source(name) == "".join(
            ["".join(lines[:opening]), "\n", *(snippet(s).rstrip("\n") + "\n\n" for s in includes(file_source(name))),
             "".join(lines[opening:])])
    for name in set(LUA_FILES) - set(INCLUDING):
        assert source(name) == file_source(name)


@pytest.mark.parametrize("text, error", [
    ("-- include: nosuch\n-- Does nothing.\nreturn 1\n", "No Lua snippet 'nosuch'"),
    ("-- Does nothing.\n-- include: keyed\nreturn 1\n", "first line"),
    ("-- include keyed\n-- Does nothing.\nreturn 1\n", "first line"),
    ("-- include: keyed, keyed\n-- Does nothing.\nreturn 1\n", "included twice"),
])
def test_an_include_is_first_and_names_a_snippet_once(text, error):
    with pytest.raises(ValueError, match=error):
        compose(text)


def test_an_unknown_include_is_an_error_when_the_scripts_load(monkeypatch):
    real = scripts.file_source

    def with_an_unknown_include(name: str) -> str:
        return "-- include: nosuch\n" + real(name) if name == "push" else real(name)

    monkeypatch.setattr(scripts, "file_source", with_an_unknown_include)
    scripts.source.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"push\.lua: No Lua snippet 'nosuch'"):
            scripts.script(redis.Redis(), "push")
    finally:
        monkeypatch.undo()
        scripts.source.cache_clear()
    assert "nosuch" not in scripts.script(redis.Redis(), "push").script


def test_the_composed_text_is_what_runs(redis_client):
    """Redis is given the script with its snippet: by SHA, the composed text's; the file
    alone fails, its snippet's functions missing."""
    registered = scripts.script(redis_client, "push_flow")
    assert registered.script == source("push_flow") != file_source("push_flow")
    assert registered.sha == hashlib.sha1(source("push_flow").encode()).hexdigest()
    k = engine.topic_keys(f"lua-{uuid.uuid4()}")
    keys = [k.queue, k.seq, k.entities, k.leases, k.scheduled, k.schedprio, k.wake, k.metrics, k.heads, k.keyof,
            k.keyqueue]
    job = str(uuid.uuid4())
    with pytest.raises(redis.ResponseError, match="keyed_push"):
        redis_client.eval(file_source("push_flow"), len(keys), *keys, "", job, 0, "", "k")
    assert redis_client.zscore(k.queue, job) is None
    assert registered(keys=keys, args=["", job, 0, "", "k"], client=redis_client) == 1
    assert redis_client.zscore(k.queue, job) is not None
    assert redis_client.hget(k.heads, "k") in (job, job.encode())
    if isinstance(redis_client, RedisCluster):
        node = redis_client.get_node_from_key(k.queue)
        assert redis_client.get_redis_connection(node).script_exists(registered.sha) == [True]
    else:
        assert redis_client.script_exists(registered.sha) == [True]


def call_every_wrapper() -> None:
    ids = [str(uuid.uuid4()) for _ in range(4)]
    engine.push("lua", [(ids[0], 0, "e0"), (ids[1], 0, None), (ids[2], 0, None)])
    engine.position("lua", ids[1])
    engine.change_priority("lua", ids[2], 9)
    popped = engine.pop("lua")
    engine.extend_leases("lua", popped)
    engine.ack("lua", popped[0])
    engine.ack_and_pop("lua", ids[1])
    engine.remove("lua", ids[0], "e0")
    engine.claim_expired("lua", now_ms=0)
    engine.schedule("lua", [(ids[3], 0, 0, None)])
    engine.promote_due("lua")
    engine.restore("lua", [(str(uuid.uuid4()), 0, None, None)])
    lock = TopicLock("lua", token="t")
    lock.acquire()
    lock.renew()
    TopicLock.holders("lua")
    lock.release()
    metrics.read(["lua"])
    engine.flow.configure("lua", engine.flow.FlowLimits(key_concurrency=1))
    try:
        keyed = [str(uuid.uuid4()) for _ in range(2)]
        engine.flow.push("lua", [(keyed[0], 0, None, "k"), (keyed[1], 0, None, "k")])
        engine.position("lua", keyed[1])
        engine.change_priority("lua", keyed[1], 3, key="k")
        engine.pop("lua")
        engine.remove("lua", keyed[1], key="k")
        engine.flow.repair("lua")
    finally:
        engine.flow.configure("lua", None)


def test_every_script_is_run_by_an_engine_function(monkeypatch, redis_client):
    by_source = {source(name): name for name in SCRIPT_NAMES}
    ran: dict[str, int] = {}
    real_call = Script.__call__

    def spy(self, keys=None, args=None, client=None):
        name = by_source.get(self.script if isinstance(self.script, str) else self.script.decode())
        if name is not None:
            documented = {int(n) for n in re.findall(r"KEYS\[(\d+)\]", "\n".join(header(name)))}
            assert len(keys or []) == len(documented), f"{name}: called with {len(keys or [])} keys"
            ran[name] = ran.get(name, 0) + 1
        return real_call(self, keys=keys, args=args, client=client)

    # A scrape sends its script by SHA in a pipeline (one round trip), without Script.__call__.
    by_sha = {Script(redis_client, source(name)).sha: name for name in SCRIPT_NAMES}
    real_evalsha = Pipeline.evalsha

    def evalsha_spy(self, sha, numkeys, *keys_and_args):
        name = by_sha.get(sha)
        if name is not None:
            documented = {int(n) for n in re.findall(r"KEYS\[(\d+)\]", "\n".join(header(name)))}
            assert numkeys == len(documented), f"{name}: called with {numkeys} keys"
            ran[name] = ran.get(name, 0) + 1
        return real_evalsha(self, sha, numkeys, *keys_and_args)

    # On a cluster, a pipeline sends a script's text with EVAL (see LuaScript).
    real_lua_call = LuaScript.__call__

    def cluster_pipeline_spy(self, keys=(), args=(), client=None):
        if isinstance(client, ClusterPipeline):
            ran[self.name] = ran.get(self.name, 0) + 1
        return real_lua_call(self, keys=keys, args=args, client=client)

    monkeypatch.setattr(Script, "__call__", spy)
    monkeypatch.setattr(Pipeline, "evalsha", evalsha_spy)
    monkeypatch.setattr(LuaScript, "__call__", cluster_pipeline_spy)
    call_every_wrapper()
    assert sorted(ran) == sorted(SCRIPT_NAMES)
    shas = [Script(redis_client, source(name)).sha for name in SCRIPT_NAMES]
    if isinstance(redis_client, RedisCluster):  # cached where they ran: the master of the topic's slot
        node = redis_client.get_node_from_key(engine.topic_keys("lua").queue)
        assert all(redis_client.get_redis_connection(node).script_exists(*shas))
    else:
        assert all(redis_client.script_exists(*shas))


def test_every_script_call_touches_one_cluster_slot(monkeypatch, redis_client):
    """Each script's KEYS hash to one Redis Cluster slot (a topic's hash tag), so every
    script runs on one master of a cluster; a key of another slot is a CROSSSLOT error."""
    by_sha = {Script(redis_client, source(name)).sha: name for name in SCRIPT_NAMES}
    seen: dict[str, set[int]] = {}
    calls: list[tuple[str, list[str]]] = []

    def record(name: str, keys: list) -> None:
        names = [k.decode() if isinstance(k, bytes) else str(k) for k in keys]
        calls.append((name, names))
        seen.setdefault(name, set()).update(key_slot(k.encode()) for k in names)

    real_call = LuaScript.__call__

    def spy(self, keys=(), args=(), client=None):
        record(self.name, list(keys))
        return real_call(self, keys=keys, args=args, client=client)

    def evalsha_spy(real):
        def call(self, sha, numkeys, *keys_and_args):
            if sha in by_sha:
                record(by_sha[sha], list(keys_and_args[:numkeys]))
            return real(self, sha, numkeys, *keys_and_args)
        return call

    monkeypatch.setattr(LuaScript, "__call__", spy)
    monkeypatch.setattr(Pipeline, "evalsha", evalsha_spy(Pipeline.evalsha))
    monkeypatch.setattr(ClusterPipeline, "evalsha", evalsha_spy(ClusterPipeline.evalsha))
    call_every_wrapper()
    assert sorted(seen) == sorted(SCRIPT_NAMES)
    crossing = [(name, keys) for name, keys in calls if len({key_slot(k.encode()) for k in keys}) != 1]
    assert crossing == []
    # Every key a script is given is one of its topic's keys, under the topic's hash tag.
    assert all(set(keys) <= set(engine.TopicKeys("lua").all()) for _, keys in calls)
