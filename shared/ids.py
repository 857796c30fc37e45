"""New event and prediction ids: UUID version 7 (RFC 9562), time-ordered, from the OS's CSPRNG.

Why version 7: every store indexes events by `event_id` (and governance its predictions by
`prediction_id`). Random (version 4) ids land on a random page of that B-tree, so each row of an
append dirties its own index page and the commit writes all of them; an id that starts with the
time lands next to the previous one. Measured on the SQLite store (`docs/benchmarks.md`, "Event
ids"): appends of 100 observations took about a third less CPU per event.

An id is 48 bits of Unix time in milliseconds, the version and variant bits, then 74 random bits:
ids made in the same millisecond are in no particular order, and nothing may rely on ids for
order (positions and stream versions give it). The random bits come from a block of 4 KiB read
from `os.urandom` once per 256 ids: `uuid.uuid4()` made one `getrandom` system call per id, which
was 7-9% of serving's CPU under load (py-spy). Safe across threads; a forked child must not share
its parent's block, so the block is dropped at fork.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_BLOCK = 4096
_RANDOM_BITS = 74
_lock = threading.Lock()
_pool = b""
_next = 0


def new_uuid() -> uuid.UUID:
    """A new time-ordered UUID (RFC 9562 version 7)."""
    global _pool, _next
    with _lock:
        if _next + 10 > len(_pool):
            _pool, _next = os.urandom(_BLOCK), 0
        raw = _pool[_next : _next + 10]
        _next += 10
    random = int.from_bytes(raw, "big") & ((1 << _RANDOM_BITS) - 1)
    # unix_ts_ms (48) | ver (4) | rand_a (12) | var (2) | rand_b (62)
    value = (time.time_ns() // 1_000_000 & ((1 << 48) - 1)) << 80
    value |= 7 << 76
    value |= (random >> 62) << 64
    value |= 0b10 << 62
    value |= random & ((1 << 62) - 1)
    return uuid.UUID(int=value)


def _forget_pool() -> None:
    global _pool, _next
    _pool, _next = b"", 0


os.register_at_fork(after_in_child=_forget_pool)
