"""Lua scripts from ``engine/lua/*.lua``, registered once per Redis client."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

import redis
from redis.cluster import ClusterPipeline
from redis.commands.core import Script

SCRIPT_NAMES = (
    "push",
    "pop",
    "ack",
    "ack_pop",
    "extend",
    "claim_expired",
    "remove",
    "change_priority",
    "position",
    "schedule",
    "promote",
    "restore",
    "lock_acquire",
    "lock_renew",
    "lock_release",
    "lock_holders",
    "scrape_topic",
    "flow_pop",
    "push_flow",
    "flow_remove",
    "flow_repair",
    "flow_position",
    "flow_change_priority",
)


@cache
def source(name: str) -> str:
    return resources.files("jobqueue.engine").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


class LuaScript:
    """A registered script, called as redis-py's :class:`Script` is.

    Called on a Redis Cluster's pipeline it is sent with ``EVAL``: a pipelined ``EVALSHA``
    cannot load the script where it is missing (a master just promoted from a replica has
    an empty script cache), while the script's text always runs. Elsewhere it goes by its
    SHA and is loaded on first use.
    """

    def __init__(self, name: str, inner: Script):
        self.name = name
        self.inner = inner

    @property
    def sha(self) -> str:
        return str(self.inner.sha)

    @property
    def script(self) -> str:
        return str(self.inner.script)

    def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = (), client: Any = None) -> Any:
        if isinstance(client, ClusterPipeline):
            return client.execute_command("EVAL", self.script, len(keys), *keys, *args)
        return self.inner(keys=list(keys), args=list(args), client=client)


_registered: weakref.WeakKeyDictionary[redis.Redis, dict[str, LuaScript]] = weakref.WeakKeyDictionary()


def script(client: redis.Redis, name: str) -> LuaScript:
    """The registered script ``name`` for ``client`` (loaded on first use with EVALSHA fallback)."""
    scripts = _registered.get(client)
    if scripts is None:
        scripts = {n: LuaScript(n, client.register_script(source(n))) for n in SCRIPT_NAMES}
        _registered[client] = scripts
    return scripts[name]
