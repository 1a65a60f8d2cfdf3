"""Lua scripts from ``engine/lua/*.lua``, registered once per Redis client.

A script whose first line is ``-- include: NAME`` (or ``-- include: NAME, OTHER``) runs
with the snippet ``engine/lua/lib/NAME.lua`` put after its opening comment: local
functions that several scripts share, each touching only the keys its caller passes
from ``KEYS``. What Redis runs, and what the SHA of ``EVALSHA`` is taken of, is that
composed text (:func:`source`); an include naming no snippet is an error at load.
"""

from __future__ import annotations

import re
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


#: The first line of a script that includes snippets: ``-- include: keyed``.
INCLUDE_RE = re.compile(r"-- include: (\w+(?:, \w+)*)")
#: Any line that reads as an include, well formed and first or not.
_ANY_INCLUDE_RE = re.compile(r"--\s*include\b", re.IGNORECASE)


def _read(*parts: str) -> str:
    path = resources.files("jobqueue.engine").joinpath("lua")
    for part in parts:
        path = path.joinpath(part)
    return path.read_text(encoding="utf-8")


@cache
def file_source(name: str) -> str:
    """The text of ``lua/NAME.lua`` as written (before its includes are resolved)."""
    return _read(f"{name}.lua")


@cache
def snippet(name: str) -> str:
    """The text of the snippet ``lua/lib/NAME.lua``; :class:`ValueError` if there is none."""
    try:
        text = _read("lib", f"{name}.lua")
    except FileNotFoundError:
        raise ValueError(f"No Lua snippet {name!r} (lua/lib/{name}.lua) to include.") from None
    if any(_ANY_INCLUDE_RE.match(line) for line in text.splitlines()):
        raise ValueError(f"The Lua snippet {name!r} includes another: snippets include nothing.")
    return text


def includes(text: str) -> list[str]:
    """The snippets a script's text includes: those its first line names."""
    lines = text.splitlines()
    match = INCLUDE_RE.fullmatch(lines[0]) if lines else None
    if any(_ANY_INCLUDE_RE.match(line) for line in lines[1 if match else 0 :]):
        raise ValueError("An include must be the script's first line, as '-- include: NAME[, NAME]'.")
    names = match.group(1).split(", ") if match else []
    if len(set(names)) != len(names):
        raise ValueError(f"A snippet included twice: {lines[0]!r}.")
    return names


def compose(text: str) -> str:
    """``text`` with the snippets it includes put after its opening comment (a blank line
    either side), so that the composed text still opens with the script's KEYS and ARGV."""
    names = includes(text)
    if not names:
        return text
    lines = text.splitlines(keepends=True)
    opening = next((i for i, line in enumerate(lines) if not line.startswith("--")), len(lines))
    parts = ["".join(lines[:opening]), "\n"]
    for name in names:
        parts += [snippet(name).rstrip("\n"), "\n\n"]
    return "".join(parts) + "".join(lines[opening:])


@cache
def source(name: str) -> str:
    """The text of the script ``name`` as Redis runs it: its file with its includes."""
    try:
        return compose(file_source(name))
    except ValueError as error:
        raise ValueError(f"{name}.lua: {error}") from None


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
