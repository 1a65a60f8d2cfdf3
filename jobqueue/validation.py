"""Checks applied to everything that creates a job, before anything is written.

``Job.objects.enqueue()``, ``createjob``, the admin's add form and the JSON API
all go through these functions, so they refuse the same input the same way.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import unicodedata
from typing import Any

from django.conf import settings as django_settings
from django.utils import timezone

from .conf import settings
from .constants import JOB_KEY_MAX_LENGTH, MAX_INT, MAX_PRIORITY, MIN_PRIORITY, TOPIC_NAME_MAX_LENGTH
from .exceptions import InvalidJob, InvalidPayload, PayloadTooLarge

#: A topic name, but for its length: lowercase ASCII letters, digits, '_', '-' and single
#: dots, starting with a letter or digit. Without lookarounds, so that JSON schema tools can
#: read the pattern built from it.
_TOPIC_NAME = r"[a-z0-9][a-z0-9_-]*(\.[a-z0-9_-]+)*\.?"
#: The topic name's pattern as the API's JSON schema states it (with ``maxLength``
#: ``TOPIC_NAME_MAX_LENGTH``); ``$`` there is the end of the string.
TOPIC_NAME_PATTERN = f"^{_TOPIC_NAME}$"
#: A whole topic name: the pattern, and at most ``TOPIC_NAME_MAX_LENGTH`` characters.
TOPIC_NAME_RE = re.compile(rf"^(?=.{{1,{TOPIC_NAME_MAX_LENGTH}}}\Z){_TOPIC_NAME}\Z")


def validate_topic_name(name: Any) -> str:
    """Return ``name`` if it is a valid topic name (:data:`TOPIC_NAME_RE`)."""
    if not isinstance(name, str) or not TOPIC_NAME_RE.match(name):
        raise InvalidJob(
            f"Invalid topic name {name!r}: use 1-{TOPIC_NAME_MAX_LENGTH} lowercase ASCII letters, digits, "
            "'_', '.' or '-', starting with a letter or digit, with no two dots in a row."
        )
    return name


#: A NUL character as json.dumps escapes it (not a literal backslash followed by "u0000").
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


#: What JSON encodes as arrays and objects.
_CONTAINERS = (dict, list, tuple)

#: ``json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False)``, its
#: encoder made once (``dumps`` makes one per call given any of these options).
_encode = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=False).encode


def _too_deep(what: str) -> InvalidPayload:
    limit = settings.MAX_PAYLOAD_DEPTH
    return InvalidPayload(f"{what} is nested more than {limit} levels deep; the limit is {limit} levels.")


def check_payload_depth(payload: Any) -> None:
    """Refuse a payload whose objects and arrays nest deeper than ``MAX_PAYLOAD_DEPTH``.

    Walked without recursion, so a payload deeper than ``json.dumps`` can go (it raises
    ``RecursionError``) is refused like any other.
    """
    limit = settings.MAX_PAYLOAD_DEPTH
    stack = [(payload, 1)] if isinstance(payload, _CONTAINERS) else []
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            raise _too_deep("Payload")
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children if isinstance(child, _CONTAINERS))


def parse_json(text: str | bytes, **kwargs: Any) -> Any:
    """``json.loads(text, **kwargs)``; JSON nested deeper than Python's parser goes (it raises
    ``RecursionError`` from about a thousand levels) is an :class:`InvalidPayload`."""
    try:
        return json.loads(text, **kwargs)
    except RecursionError:
        raise _too_deep("The JSON") from None


def encode_payload(payload: Any) -> str:
    """Return the payload's JSON text, refusing what JSON cannot hold, what nests too deeply
    and what is too large."""
    try:
        text = _encode(payload)
        size = len(text) if text.isascii() else len(text.encode("utf-8"))  # (isascii() reads a flag)
    except RecursionError:
        check_payload_depth(payload)  # too deep, as it nearly always is then
        raise
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError (a lone surrogate) is a ValueError
        check_payload_depth(payload)  # a cycle is refused as nested too deeply, as before JSON is made
        raise InvalidPayload(f"Payload is not JSON-serializable: {exc}") from exc
    # Each level of nesting opens with a bracket: text with no more of them than the limit
    # (those in strings counted too) cannot nest deeper, and is not walked.
    if text.count("[") + text.count("{") > settings.MAX_PAYLOAD_DEPTH:
        check_payload_depth(payload)
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        # PostgreSQL's jsonb cannot store it; refused everywhere so every database accepts the same payloads.
        raise InvalidPayload("Payload text must not contain NUL characters (\\u0000).")
    limit = settings.MAX_PAYLOAD_BYTES
    if size > limit:
        raise PayloadTooLarge(f"Payload is {size} bytes of JSON; the limit is {limit} bytes.")
    return text


def validate_priority(priority: Any) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidJob(f"Priority must be an integer, not {priority!r}.")
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise InvalidJob(f"Priority {priority} is out of range ({MIN_PRIORITY}..{MAX_PRIORITY}).")
    return priority


def validate_entity_id(entity_id: Any) -> str | None:
    if entity_id is None:
        return None
    if not isinstance(entity_id, str) or not entity_id:
        raise InvalidJob(f"Entity id must be a non-empty string, not {entity_id!r}.")
    limit = settings.ENTITY_ID_MAX_LENGTH
    if len(entity_id) > limit:
        raise InvalidJob(f"Entity id is {len(entity_id)} characters long; the limit is {limit}.")
    # Cc covers C0, DEL and C1; Zl/Zp are line breaks to anything that prints the id.
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in entity_id):
        raise InvalidJob("Entity id must not contain control characters or line breaks.")
    return entity_id


def validate_job_key(key: Any) -> str | None:
    """A job's key (what its topic's flow control counts by): a short string without
    whitespace or control characters; numbers are taken as their text."""
    if key is None or key == "":
        return None
    if isinstance(key, int) and not isinstance(key, bool):
        key = str(key)
    if not isinstance(key, str):
        raise InvalidJob(f"Job key must be a string, not {key!r}.")
    if len(key) > JOB_KEY_MAX_LENGTH:
        raise InvalidJob(f"Job key is {len(key)} characters long; the limit is {JOB_KEY_MAX_LENGTH}.")
    if any(c.isspace() or unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in key):
        raise InvalidJob("Job key must not contain whitespace or control characters.")
    return key


def validate_positive_int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INT:
        raise InvalidJob(f"{name} must be a positive integer up to {MAX_INT}, not {value!r}.")
    return value


def resolve_run_after(run_after: Any, delay: Any) -> dt.datetime | None:
    """Turn ``run_after`` / ``delay`` into an aware datetime (or ``None`` for "now")."""
    if run_after is not None and delay is not None:
        raise InvalidJob("Give run_after or delay, not both.")
    if delay is not None:
        if isinstance(delay, dt.timedelta):
            seconds = delay.total_seconds()
        elif isinstance(delay, (int, float)) and not isinstance(delay, bool):
            seconds = float(delay)
        else:
            raise InvalidJob(f"Delay must be a number of seconds or a timedelta, not {delay!r}.")
        if seconds < 0 or seconds != seconds:
            raise InvalidJob(f"Delay must not be negative, got {delay!r}.")
        try:
            return timezone.now() + dt.timedelta(seconds=seconds)
        except OverflowError:
            raise InvalidJob(f"Delay {delay!r} is too long.") from None
    if run_after is None:
        return None
    if not isinstance(run_after, dt.datetime):
        raise InvalidJob(f"run_after must be a datetime, not {run_after!r}.")
    if timezone.is_naive(run_after):
        if django_settings.USE_TZ:
            raise InvalidJob("run_after is a naive datetime while USE_TZ is on; give it a timezone.")
        run_after = timezone.make_aware(run_after)
    try:
        # UTC: PostgreSQL refuses some offsets Python accepts (beyond +/-15:59).
        return run_after.astimezone(dt.timezone.utc)
    except (OverflowError, ValueError):
        raise InvalidJob(f"run_after {run_after!r} is out of range.") from None


DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*\Z")
DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(text: str) -> dt.timedelta:
    """Parse ``"30s"``, ``"5m"``, ``"7d"``, ``"250ms"`` or a bare number of seconds."""
    match = DURATION_RE.match(text or "")
    if not match:
        raise ValueError(f"Invalid duration {text!r}: use a number with s, m, h, d or w (e.g. 30s, 7d).")
    try:
        return dt.timedelta(seconds=float(match.group(1)) * DURATION_UNITS[match.group(2)])
    except OverflowError:
        raise ValueError(f"Duration {text!r} is too long.") from None
