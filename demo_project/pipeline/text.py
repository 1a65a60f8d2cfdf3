"""The pipeline's logic as plain functions: no jobs, no database, easy to test.

``jobs.py`` wraps each step in a handler that reports progress.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

#: Longest text the form accepts, in characters (payloads carry it from step to step).
MAX_TEXT_LENGTH = 20_000
#: Distinct words the count step hands to the report step.
MAX_COUNTED_WORDS = 200
#: Words the report lists.
TOP_WORDS = 10

#: Common English words left out of the ranking (they would top every text).
STOPWORDS = frozenset(
    """a about after all also an and any are as at be because been but by can could did do does for
    from had has have he her his how i if in into is it its just me my no not of on one or our out
    she so than that the their them then there these they this to up us was we were what when which
    who will with would you your""".split()
)

# Letters (any script), optionally joined by an apostrophe or a hyphen: "don't", "well-known".
_WORD_RE = re.compile(r"[^\W\d_]+(?:['-][^\W\d_]+)*")
_SPACE_RE = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """Normalise ``text`` for counting: NFKC, lower case, typographic apostrophes made
    plain, control characters dropped, runs of white space collapsed to one space."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, not {type(text).__name__}")
    text = unicodedata.normalize("NFKC", text).casefold().replace("\u2019", "'")
    text = "".join(c if c.isprintable() or c.isspace() else " " for c in text)
    return _SPACE_RE.sub(" ", text).strip()


def split_words(text: str) -> list[str]:
    """The words of ``text`` in order (digits and punctuation are not words)."""
    return _WORD_RE.findall(text)


def chunked(items: Sequence[T], parts: int) -> Iterator[Sequence[T]]:
    """Split ``items`` into at most ``parts`` consecutive slices of near-equal size."""
    if parts < 1:
        raise ValueError("parts must be at least 1")
    size = max(1, -(-len(items) // parts))  # ceiling division
    for start in range(0, len(items), size):
        yield items[start : start + size]


def count_words(words: Iterable[str], ignore: frozenset[str] = STOPWORDS) -> Counter[str]:
    """How often each word occurs, leaving out ``ignore`` and one-letter words."""
    return Counter(w for w in words if len(w) > 1 and w not in ignore)


def build_report(
    counts: dict[str, int],
    total_words: int,
    title: str = "",
    distinct_words: int | None = None,
    top: int = TOP_WORDS,
) -> dict[str, Any]:
    """The report the page shows: JSON data only, so the page decides how to escape it.

    ``counts`` may hold only the most frequent words; ``distinct_words`` then says
    how many different words the text had.

    Words are ranked by count, then alphabetically, so equal counts rank the same way
    every time.
    """
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]
    highest = max(ranked[0][1], 1) if ranked else 1
    return {
        "title": title or "Untitled text",
        "total_words": total_words,
        "distinct_words": len(counts) if distinct_words is None else distinct_words,
        # share: the count as a percentage of the top count, the width of the word's bar.
        "top_words": [{"word": w, "count": n, "share": round(100 * n / highest)} for w, n in ranked],
    }
