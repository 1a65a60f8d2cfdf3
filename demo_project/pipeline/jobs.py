"""The demo pipeline's handlers: ``ingest`` -> ``count`` -> ``report``.

Each step reports progress and pauses briefly between steps, so a person
watching the page sees the bars move; the work itself is in ``text.py``.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any

from jobqueue import Next, handler

from . import text

#: The topics of the pipeline, in order; the page waits for the last one.
TOPICS = ("ingest", "count", "report")
FINAL_TOPIC = TOPICS[-1]

#: Pause between two progress reports (seconds): the demo's work is instant, a person is not.
STEP_SECONDS = float(os.environ.get("DEMO_STEP_SECONDS", "0.3"))


def pause() -> None:
    time.sleep(STEP_SECONDS)


@handler("ingest", timeout=60, max_attempts=3)
def ingest(job: Any) -> Next:
    """Clean the text a visitor typed and pass it on to be counted."""
    raw = job.payload.get("text")
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError("Nothing to analyse: the text is empty.")
    title = str(job.payload.get("title") or "")[:100]
    job.set_progress(10, f"received {len(raw)} characters", stage="reading")
    pause()
    cleaned = text.clean_text(raw)
    job.set_progress(60, "normalised case, quotes and white space", stage="cleaning")
    pause()
    job.set_progress(100, f"{len(cleaned)} characters ready for counting", stage="done")
    return Next("count", {"title": title, "text": cleaned})


@handler("count", timeout=120, max_attempts=3, isolation="process")
def count(job: Any) -> Next:
    """Count the words, chunk by chunk, in a forked child process (isolation="process")."""
    words = text.split_words(job.payload["text"])
    counts: Counter[str] = Counter()
    chunks = list(text.chunked(words, 5)) or [[]]
    done = 0
    for number, chunk in enumerate(chunks, start=1):
        counts.update(text.count_words(chunk))
        done += len(chunk)
        percent = 100 * number // len(chunks)
        job.set_progress(percent, f"counted {done} of {len(words)} words", stage="counting")
        pause()
    # Printed output is kept with the attempt's Execution row (see the admin).
    print(f"child pid {os.getpid()}: {len(words)} words, {len(counts)} distinct")
    return Next(
        "report",
        {
            "title": job.payload.get("title", ""),
            "total_words": len(words),
            "distinct_words": len(counts),
            "counts": dict(counts.most_common(text.MAX_COUNTED_WORDS)),
        },
    )


@handler("report", timeout=60, max_attempts=3)
def report(job: Any) -> dict[str, Any]:
    """Rank the counted words into the report the page shows."""
    job.set_progress(20, "ranking words", stage="ranking")
    pause()
    result = text.build_report(
        job.payload["counts"],
        job.payload["total_words"],
        title=job.payload.get("title", ""),
        distinct_words=job.payload.get("distinct_words"),
    )
    job.set_progress(70, f"top {len(result['top_words'])} words chosen", stage="writing")
    pause()
    job.set_progress(100, "report ready", stage="done")
    return result
