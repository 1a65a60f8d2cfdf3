"""Celery's Redis broker, read without losing a message to a killed consumer.

kombu's Redis transport takes a message with ``BRPOP`` and only then records it as
unacknowledged: a consumer killed between the two loses it for good. The bridge
takes messages with one Lua script (``take.lua``) that pops them and records them in
kombu's own unacknowledged hash and index in the same step; ``restore.lua`` puts a
killed bridge's messages back, in one step too, once they are older than the
visibility timeout (at start, and every :data:`RESTORE_SECONDS` while idle). kombu's
restore (called too, for what kombu's own consumers took) would do it as well, but it
skips its turn while another consumer holds its lock, and a consumer killed while
holding it blocks every restore for five minutes. Key names and body decoding are
kombu's, read from its channel.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from typing import Any

from kombu import Connection, Queue

#: Seconds between two restores of messages past their visibility timeout (at most; a
#: shorter visibility timeout restores as often).
RESTORE_SECONDS = 10.0


class TakenMessage:
    """A message taken from the broker, with the parts the bridge reads of a kombu message;
    :meth:`ack` and :meth:`reject` drop it from the unacknowledged hash."""

    def __init__(self, source: RedisSource, raw: bytes):
        self.source = source
        self.tag: str | None = None
        self.errors: list[Any] = []
        self.content_type = self.content_encoding = None
        self.headers: dict[str, Any] = {}
        self.properties: dict[str, Any] = {}
        self.delivery_info: dict[str, Any] = {}
        self.body: Any = b""
        try:
            message = source.channel.Message(json.loads(raw), channel=source.channel)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self.errors.append(exc)  # not a kombu message: refused as malformed
            return
        self.tag = message.delivery_tag
        self.errors = message.errors
        self.content_type, self.content_encoding = message.content_type, message.content_encoding
        self.headers, self.properties = message.headers or {}, message.properties or {}
        self.delivery_info, self.body = message.delivery_info or {}, message.body

    def ack(self, multiple: bool = False) -> None:
        self.source.settle([self])

    def reject(self, requeue: bool = False) -> None:
        self.source.settle([self])


class RedisSource:
    """Takes messages from ``queues`` (highest priority first, the queues taken in turn)."""

    def __init__(self, conn: Connection, queues: list[Queue], declare: bool = True):
        self.channel = conn.channel()
        self.client = self.channel.client
        if declare:
            for queue in queues:
                queue(self.channel).declare()
        self.names = [queue.name for queue in queues]
        self.take_script, self.restore_script = (
            self.client.register_script(resources.files(__package__).joinpath(f"{name}.lua").read_text("utf-8"))
            for name in ("take", "restore"))
        self._turn = 0
        self._restored_at = 0.0

    def keys(self) -> list[str]:
        """Every list of every queue, in the order ``take.lua`` empties them."""
        self._turn = (self._turn + 1) % len(self.names)
        names = self.names[self._turn:] + self.names[:self._turn]
        lists = [self.channel._q_for_pri(name, pri) for pri in self.channel.priority_steps for name in names]
        return [*lists, self.channel.unacked_key, self.channel.unacked_index_key]

    def restore_keys(self) -> list[str]:
        """Every list of every queue, queue after queue, as ``restore.lua`` reads them."""
        lists = [self.channel._q_for_pri(name, pri) for name in self.names for pri in self.channel.priority_steps]
        return [*lists, self.channel.unacked_key, self.channel.unacked_index_key]

    def take(self, limit: int) -> list[TakenMessage]:
        if limit < 1:
            return []
        raw = self.take_script(keys=self.keys(), args=[time.time(), limit], client=self.client)
        return [TakenMessage(self, item) for item in raw]

    def settle(self, messages: list[TakenMessage]) -> None:
        """Drop messages from the unacknowledged hash and index: acknowledged or refused."""
        tags = [m.tag for m in messages if m.tag is not None]
        if tags:
            pipe = self.client.pipeline(transaction=False)
            pipe.zrem(self.channel.unacked_index_key, *tags)
            pipe.hdel(self.channel.unacked_key, *tags)
            pipe.execute()

    def restore_visible(self, force: bool = False) -> int:
        """Put back the messages taken longer ago than the visibility timeout; how many."""
        timeout = float(self.channel.visibility_timeout)
        if not force and time.monotonic() - self._restored_at < min(RESTORE_SECONDS, timeout):
            return 0
        self._restored_at = time.monotonic()
        steps = list(self.channel.priority_steps)
        args = [time.time() - timeout, len(steps), *steps, *self.names]
        restored = int(self.restore_script(keys=self.restore_keys(), args=args, client=self.client))
        # What kombu's own consumers took (a killed Celery worker's, say) is left to kombu.
        self.channel.qos.restore_visible(num=None, interval=1)
        return restored
