"""HTML fragments of the admin pages.

Everything a job's author or handler wrote (payload, result, messages, output) goes
through ``format_html`` / ``format_html_join``, which escape every argument: nothing
here ever marks user text as safe.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterable
from typing import Any

from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _

from ..constants import MAX_PROGRESS, MIN_PROGRESS
from ..ids import short_id

EMPTY = "–"


def status_badge(status: str, label: str | None = None) -> SafeString:
    """A coloured pill; the CSS class is picked from a fixed list, never from the value itself."""
    known = {
        "waiting",
        "scheduled",
        "queued",
        "running",
        "succeeded",
        "failed",
        "cancelled",
        "retry",
        "timeout",
        "lost",
        "aborted",
        "paused",
    }
    css = status if status in known else "unknown"
    return format_html('<span class="jq-badge jq-badge-{}">{}</span>', css, label or status)


def progress_bar(percent: int, message: str = "", stage: str = "", status: str = "") -> SafeString:
    """A ``<progress>`` bar with its percentage, stage and message below, coloured by ``status``."""
    percent = max(MIN_PROGRESS, min(MAX_PROGRESS, int(percent or 0)))
    note = " · ".join(part for part in (stage, message) if part)
    tone = status if status in ("succeeded", "failed", "cancelled") else "active"
    return format_html(
        '<div class="jq-progress jq-progress-{}"><progress max="{}" value="{}" title="{}">{}%</progress>'
        '<span class="jq-progress-pct">{}%</span>{}</div>',
        tone,
        MAX_PROGRESS,
        percent,
        note,
        percent,
        percent,
        format_html('<div class="jq-progress-note">{}</div>', note) if note else "",
    )


def pretty_json(value: Any) -> SafeString:
    """Indented JSON in a ``<pre>``; ``None`` shows as a dash. A value nested too deeply for
    ``json.dumps`` (stored before ``MAX_PAYLOAD_DEPTH`` existed) is shown on one line."""
    if value is None:
        return format_html('<span class="jq-muted">{}</span>', EMPTY)
    try:
        text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)
    except RecursionError:
        text = compact_json(value)
    return format_html('<pre class="jq-pre jq-json">{}</pre>', text)


class _Literal(str):
    """Punctuation queued by :func:`compact_json`, written as it is."""


def compact_json(value: Any) -> str:
    """One-line JSON of ``value``, built without recursion however deep it nests."""
    parts: list[str] = []
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _Literal):
            parts.append(item)
        elif isinstance(item, dict):
            queued: list[Any] = []
            for key, child in sorted(item.items(), key=lambda entry: str(entry[0])):
                queued += [_Literal(","), _Literal(json.dumps(str(key), ensure_ascii=False) + ":"), child]
            stack += reversed([_Literal("{"), *queued[1:], _Literal("}")])
        elif isinstance(item, list):
            queued = []
            for child in item:
                queued += [_Literal(","), child]
            stack += reversed([_Literal("["), *queued[1:], _Literal("]")])
        else:
            parts.append(json.dumps(item, ensure_ascii=False, default=str))
    return "".join(parts)


def pre(text: str) -> SafeString:
    if not text:
        return format_html('<span class="jq-muted">{}</span>', EMPTY)
    return format_html('<pre class="jq-pre">{}</pre>', text)


def duration(delta: dt.timedelta | float | None) -> str:
    """``0.42 s``, ``3 min 07 s``, ``2 h 05 min``; a dash for ``None``."""
    if delta is None:
        return EMPTY
    seconds = delta.total_seconds() if isinstance(delta, dt.timedelta) else float(delta)
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def ago(seconds: float | None) -> str:
    if seconds is None:
        return EMPTY
    return _("%(duration)s ago") % {"duration": duration(max(0.0, seconds))}


def epoch(value: float | None) -> dt.datetime | None:
    """An epoch timestamp (as written in Redis) as an aware datetime."""
    if not value:
        return None
    return dt.datetime.fromtimestamp(float(value), tz=dt.timezone.utc)


def local_time(value: dt.datetime | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    if value is None:
        return EMPTY
    if timezone.is_aware(value):
        value = timezone.localtime(value)
    return value.strftime(fmt)


def job_url(pk: Any) -> str:
    return reverse("admin:jobqueue_job_change", args=[pk])


def job_link(pk: Any, label: str | None = None) -> SafeString:
    return format_html('<a href="{}" class="jq-mono">{}</a>', job_url(pk), label or short_id(pk))


def job_links(rows: Iterable[tuple[Any, str, str]], more: int = 0) -> SafeString:
    """Links to jobs given as ``(pk, topic, status)``, with a note when the list is cut."""
    items = format_html_join(
        "",
        '<li><a href="{}" class="jq-mono">{}</a> {} {}</li>',
        ((job_url(pk), short_id(pk), topic, status_badge(status)) for pk, topic, status in rows),
    )
    if not items:
        return format_html('<span class="jq-muted">{}</span>', EMPTY)
    tail = format_html('<li class="jq-muted">{}</li>', _("… and %(n)s more") % {"n": more}) if more else ""
    return format_html('<ul class="jq-links">{}{}</ul>', items, tail)


def changelist_url(model: str, **params: Any) -> str:
    url = reverse(f"admin:jobqueue_{model}_changelist")
    return f"{url}?{urlencode(params)}" if params else url


def holders(items: Iterable[Any] | None) -> SafeString:
    """Slot holders (``engine.Holder``): worker id, host, and since when (for how long)."""
    if items is None:
        return format_html('<span class="jq-muted">{}</span>', _("Redis unavailable"))
    rows = format_html_join(
        "",
        '<li><span class="jq-mono">{}</span> <span class="jq-muted" title="{}">{} · {}</span></li>',
        (
            (
                h.worker_id,
                _("since %(time)s") % {"time": local_time(epoch(h.info.get("since")))},
                h.info.get("host", "?"),
                _since(h.info.get("since")),
            )
            for h in items
        ),
    )
    if not rows:
        return format_html('<span class="jq-muted">{}</span>', _("free"))
    return format_html('<ul class="jq-links">{}</ul>', rows)


def _since(since: float | None) -> str:
    if not since:
        return EMPTY
    return _("since %(time)s (%(duration)s)") % {
        "time": local_time(epoch(since), "%H:%M:%S"),
        "duration": duration(max(0.0, time.time() - float(since))),
    }


def flow(state: dict[str, Any] | None, rate_text: str = "") -> SafeString:
    """A topic's flow limits and how full they are now (see ``Topic.flow_state()``): the
    rate with the tokens left in its bucket, the concurrency per key, the keys waiting."""
    if state is None:
        return format_html('<span class="jq-muted">{}</span>', _("Redis unavailable"))
    parts = []
    rate = state.get("rate")
    if rate:
        parts.append(format_html(
            '<span class="jq-flow-rate">{}</span> <span class="jq-muted">{}</span>',
            _("rate %(rate)s") % {"rate": rate_text or f"{rate['count']}/{rate['period']:g}s"},
            _("%(tokens)s of %(burst)s tokens left") % {"tokens": state.get("tokens", "?"), "burst": rate["burst"]},
        ))
    if state.get("key_concurrency"):
        parts.append(format_html("{}", _("at most %(n)s running per key") % {"n": state["key_concurrency"]}))
    elif state.get("fair"):
        parts.append(format_html("{}", _("keys take turns")))
    if state.get("keys_waiting"):
        keys = format_html_join(
            ", ", '<span class="jq-mono">{}</span> <span class="jq-muted">({})</span>',
            ((k["key"], _("%(queued)s queued, %(running)s running") % k) for k in state.get("keys", [])),
        )
        parts.append(format_html(
            "{} {}", _("%(n)s key(s) waiting:") % {"n": state["keys_waiting"]}, keys,
        ))
    if not parts:
        return format_html('<span class="jq-muted">{}</span>', _("no limits"))
    return format_html_join("", '<div class="jq-flow">{}</div>', ((p,) for p in parts))
