"""What a handler produced, made storable by every database.

A handler's error and traceback, its progress message and stage, its captured stdout
and stderr, and the strings of its JSON result may hold characters a database refuses:
NUL (PostgreSQL's text and jsonb cannot hold it) and surrogates (not UTF-8, so no
driver can send them). Every writer of such text calls :func:`storable_text` or
:func:`storable_json`, which put U+FFFD (the character undecodable bytes of captured
output already become) in their place, on every database alike. Lengths are kept, so
text cut to a column's size still fits.
"""

from __future__ import annotations

import json
import re
from typing import Any

#: What stands for each character a database cannot store.
REPLACEMENT = "\ufffd"

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
#: The same characters as ``json.dumps`` escapes them (astral characters come as surrogate
#: pairs too: those only cost a needless look at the data).
_UNSTORABLE_ESCAPED = re.compile(r"\\u(?:0000|d[89a-f])")


def storable_text(text: str) -> str:
    """``text`` with NUL and surrogates replaced by U+FFFD."""
    return _UNSTORABLE.sub(REPLACEMENT, text)


def storable_json(value: Any) -> Any:
    """JSON data with :func:`storable_text` applied to every string, keys included.

    Raises ``TypeError`` or ``ValueError`` for data that is not JSON (see :func:`encode_json`).
    """
    if _UNSTORABLE_ESCAPED.search(encode_json(value)):
        return _replaced(value)
    return value


def encode_json(value: Any) -> str:
    """``json.dumps(value)``; ``TypeError`` or ``ValueError`` for what JSON cannot hold (a
    set, NaN...), ``ValueError`` for data nested too deeply to encode."""
    try:
        return json.dumps(value, allow_nan=False)
    except RecursionError:
        raise ValueError("it nests too deeply") from None


def _replaced(value: Any) -> Any:
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {_replaced(k): _replaced(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_replaced(v) for v in value]
    return value


def exception_text(exc: BaseException) -> str:
    """``"ValueError: message"``, or the class alone for an exception without a message."""
    message = exception_message(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def exception_message(exc: BaseException) -> str:
    """``str(exc)`` made storable; ``<unprintable ValueError>`` if ``str()`` raises."""
    try:
        return storable_text(str(exc))
    except Exception:  # noqa: BLE001 - any error of the handler's __str__
        return f"<unprintable {type(exc).__name__}>"


def exception_class_path(exc: BaseException | type[BaseException]) -> str:
    """The dotted path of an exception's class: ``builtins.ValueError``, ``myapp.mail.Bounced``."""
    cls = exc if isinstance(exc, type) else type(exc)
    return f"{cls.__module__}.{cls.__qualname__}"
