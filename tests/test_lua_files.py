"""Every Lua file is loaded, documented, cluster-safe and run by the engine."""

from __future__ import annotations

import re
import uuid
from importlib import resources

import pytest
from redis.client import Pipeline
from redis.cluster import ClusterPipeline, RedisCluster
from redis.commands.core import Script
from redis.crc import key_slot

from jobqueue import engine
from jobqueue.engine import TopicLock, metrics
from jobqueue.engine.scripts import SCRIPT_NAMES, LuaScript, source

LUA_DIR = resources.files("jobqueue.engine").joinpath("lua")
LUA_FILES = sorted(p.name[: -len(".lua")] for p in LUA_DIR.iterdir() if p.name.endswith(".lua"))
CALL_RE = re.compile(r"redis\.call\(\s*'(\w+)'\s*(?:,\s*([^,)]+))?")
# Commands that take no key: the only ones allowed without a KEYS[...] first argument.
KEYLESS = {"TIME"}


def header(name: str) -> list[str]:
    lines = source(name).splitlines()
    return lines[: next(i for i, line in enumerate(lines) if not line.startswith("--"))]


def body(name: str) -> str:
    return "\n".join(source(name).splitlines()[len(header(name)) :])


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
    calls = CALL_RE.findall(text)
    assert calls, f"{name}.lua calls no Redis command"
    for command, first in calls:
        if command in KEYLESS:
            continue
        assert first.strip().startswith("KEYS["), f"{name}.lua: {command} on {first!r}, not on a KEYS entry"


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
