"""Kafka records: runs of envelopes of one topic and key share a record, in store order."""

from __future__ import annotations

import pytest

from shared import bus
from shared.bus import DecodeError, decode, to_records
from shared.events.types import TOPIC_DATA
from tests.support import observation


def test_consecutive_envelopes_of_one_task_share_a_record_and_decode_back_in_order():
    a = [observation(task="a") for _ in range(3)]
    b = [observation(task="b") for _ in range(2)]
    envelopes = [*a, *b, observation(task="a")]
    records = to_records(envelopes)
    assert [(r.key, int(dict(r.headers)["count"])) for r in records] == [
        (b"a", 3),
        (b"b", 2),
        (b"a", 1),
    ]
    assert {r.topic for r in records} == {TOPIC_DATA}
    decoded = [e for r in records for e in decode(r.value)]
    assert decoded == envelopes


def test_a_record_holds_at_most_its_limits(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(bus, "RECORD_ENVELOPES", 4)
    envelopes = [observation() for _ in range(10)]
    assert [len(decode(r.value)) for r in to_records(envelopes)] == [4, 4, 2]
    one = len(envelopes[0].to_json())
    monkeypatch.setattr(bus, "RECORD_BYTES", 2 * one + 5)  # two and their separators fit
    assert [len(decode(r.value)) for r in to_records(envelopes)] == [2] * 5


def test_a_single_envelope_still_decodes_and_a_bad_member_spoils_its_record():
    one = observation()
    assert decode(one.to_json()) == [one]
    with pytest.raises(DecodeError, match="empty array"):
        decode(b"[]")
    with pytest.raises(DecodeError, match="not a valid envelope"):
        decode(b"[" + one.to_json() + b',{"type": "ObservationRecorded"}]')


async def test_a_start_offset_the_broker_never_gives_fails_the_start_with_the_reason():
    # aiokafka retries an offset lookup for as long as the broker does not answer it; serving
    # pins its start offsets before it loads its state, so that wait must end.
    import asyncio

    from aiokafka import TopicPartition

    class Unanswered:
        def assignment(self) -> set[TopicPartition]:
            return {TopicPartition("continuo.deployments", 0)}

        async def position(self, partition: TopicPartition) -> int:
            await asyncio.Event().wait()
            return 0

    from services.serving.deployments import NoDeadLetters

    consumer = bus.EnvelopeConsumer(
        "127.0.0.1:1", ["continuo.deployments"], group_id=None, dead_letters=NoDeadLetters()
    )
    consumer._consumer = Unanswered()  # type: ignore[assignment]
    with pytest.raises(RuntimeError, match=r"continuo.deployments\[0\] within 0.05 s"):
        await consumer.pin_positions(timeout=0.05)
