"""Lua scripts from ``engine/lua/*.lua``, registered once per Redis client."""

from __future__ import annotations

import weakref
from functools import cache
from importlib import resources

import redis
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


_registered: weakref.WeakKeyDictionary[redis.Redis, dict[str, Script]] = weakref.WeakKeyDictionary()


def script(client: redis.Redis, name: str) -> Script:
    """The registered script ``name`` for ``client`` (loaded on first use with EVALSHA fallback)."""
    scripts = _registered.get(client)
    if scripts is None:
        scripts = {n: client.register_script(source(n)) for n in SCRIPT_NAMES}
        _registered[client] = scripts
    return scripts[name]
