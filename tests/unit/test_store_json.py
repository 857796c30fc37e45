"""The relay's JSON of a stored row: timestamps and tasks read off the stored text (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import TypeAdapter

from shared.store.sql import _payload_task, _when_text

WHEN = TypeAdapter(datetime)


def test_stored_timestamps_become_rfc3339_of_the_same_instant():
    cases = {
        "2026-11-28 14:45:59.709000": datetime(2026, 11, 28, 14, 45, 59, 709000, UTC),  # SQLite
        "2026-11-28 14:45:59.709+00": datetime(2026, 11, 28, 14, 45, 59, 709000, UTC),  # PG
        "2026-11-28 14:45:59+00": datetime(2026, 11, 28, 14, 45, 59, tzinfo=UTC),
        "2026-11-28 15:45:59.000001+01": datetime(2026, 11, 28, 14, 45, 59, 1, UTC),
    }
    for stored, instant in cases.items():
        assert WHEN.validate_python(_when_text(stored)) == instant, stored
    aware = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert WHEN.validate_python(_when_text(aware)) == aware


def test_the_task_is_read_off_the_payload_or_parsed_when_it_is_not_plain():
    assert _payload_task('{"task":"elec","x":1}') == "elec"  # as appended
    assert _payload_task('{"task": "elec", "x": 1}') == "elec"  # PostgreSQL's jsonb
    assert _payload_task('{"task":"a \\"b\\"","x":1}') == 'a "b"'
    assert _payload_task('{"a":1,"task":"late"}') == "late"
    assert _payload_task('{"a":1}') is None
    assert _payload_task('{"task":3}') is None
