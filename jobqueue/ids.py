"""The ids of new jobs (the model's default, and ``enqueue()``'s)."""

from __future__ import annotations

import os
import time
import uuid

#: The 48 bits of the milliseconds, and the 62 random bits after the variant.
_MS_MASK = (1 << 48) - 1
_RAND_B_MASK = (1 << 62) - 1


def new_job_id() -> uuid.UUID:
    """A new job's id: a version 7 UUID (RFC 9562), 48 bits of Unix time in milliseconds
    then 74 random bits (``os.urandom``).

    Ids made later sort after the ones before, so a new job's primary key, and its
    Executions' ``job_id``, go into the pages of the B-tree the last jobs used, which stay
    cached, instead of a random page of it: with ten million rows, a random (version 4)
    id made every insert read, dirty and (after each checkpoint) log a whole page that
    was rarely cached.
    """
    rand = int.from_bytes(os.urandom(10), "big")
    value = ((time.time_ns() // 1_000_000) & _MS_MASK) << 80 | 0x7 << 76 | (rand >> 68) << 64 | 0b10 << 62
    return uuid.UUID(int=value | rand & _RAND_B_MASK)


def made_at_ms(job_id: uuid.UUID | str) -> int | None:
    """When a version 7 id was made (Unix time in milliseconds, the enqueuer's clock);
    ``None`` for an id of another kind (a caller's own, a random one)."""
    try:
        value = job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))
    except ValueError:
        return None
    return value.int >> 80 if value.version == 7 else None


#: Hex digits of a job id shown for it in lists and logs (its last ones: see :func:`short_id`).
SHORT_ID_LENGTH = 8


def short_id(job_id: uuid.UUID | str) -> str:
    """The last :data:`SHORT_ID_LENGTH` hex digits of a job id, shown for it in lists: the
    first ones of a version 7 id are the time it was made, the same for the jobs of a
    whole minute; the last ones are random."""
    return (job_id.hex if isinstance(job_id, uuid.UUID) else str(job_id).replace("-", ""))[-SHORT_ID_LENGTH:]
