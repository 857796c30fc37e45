"""New ids are RFC 9562 version 7: unique, and ordered by the millisecond they were made in."""

import os
import time
import uuid

from shared.ids import new_uuid


def test_ids_are_version_7_with_the_rfc_variant_and_the_current_time() -> None:
    before = time.time_ns() // 1_000_000
    made = new_uuid()
    after = time.time_ns() // 1_000_000
    assert made.version == 7
    assert made.variant == uuid.RFC_4122
    assert before <= int.from_bytes(made.bytes[:6], "big") <= after


def test_ids_are_unique_and_ordered_across_milliseconds() -> None:
    first = [new_uuid() for _ in range(20_000)]
    time.sleep(0.002)
    second = [new_uuid() for _ in range(100)]
    assert len(set(first + second)) == len(first) + len(second)
    assert max(first) < min(second)
    # Within a millisecond the order is random: 74 random bits per id.
    assert len({u.int & ((1 << 62) - 1) for u in first}) == len(first)


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    new_uuid()  # the parent holds a block of random bytes
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, new_uuid().bytes)
        os._exit(0)
    os.close(write)
    child = uuid.UUID(bytes=os.read(read, 16))
    os.waitpid(pid, 0)
    # Without dropping the block at fork, both would take the same next random bytes.
    assert child.bytes[6:] != new_uuid().bytes[6:]
