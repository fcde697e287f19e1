"""Fuzzing DLQ replay input: dead-letter records with any headers, keys and values.

``wirebus dlq replay`` reads whatever is on a ``.dlq`` topic: records wirebus
wrote, and records anyone else wrote or garbled. :func:`wirebus.dlq.replay_record`
turns each into the record to send back; :func:`wirebus.dlq.replay` does that
for a whole topic. For any record the result is a valid replay record (its
original key, value and non-``wirebus_*`` headers, to a named topic) or a
clear :class:`~wirebus.WirebusError`; one bad record never ends the replay of
the others.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.wire import TEXT, settings_for
from wirebus import WirebusError
from wirebus.broker import OutgoingRecord, Record
from wirebus.brokers.memory import InMemoryBroker
from wirebus.codec import EventRegistry
from wirebus.dlq import REPLAY_GROUP, UnreplayableRecord, replay, replay_record

pytestmark = pytest.mark.fuzz

WHY = ["wirebus_error_type", "wirebus_error_message", "wirebus_original_topic",
       "wirebus_original_partition", "wirebus_original_offset", "wirebus_attempts"]  # fmt: skip
OTHERS = ["ce_id", "ce_type", "ce_specversion", "traceparent", "x-anything"]
ANY_BYTES = st.one_of(st.binary(max_size=40), st.sampled_from([b"", b"\x00", b"\xff\xfe"]))
TEXT_BYTES = TEXT.map(str.encode)


def headers(values: st.SearchStrategy[bytes]) -> st.SearchStrategy[tuple[tuple[str, bytes], ...]]:
    names = st.one_of(st.sampled_from(WHY + OTHERS), TEXT)
    return st.lists(st.tuples(names, values), max_size=8).map(tuple)


def dlq_records(values: st.SearchStrategy[bytes]) -> st.SearchStrategy[Record]:
    return st.builds(
        Record,
        topic=st.one_of(TEXT.map(lambda t: t + ".dlq"), TEXT),
        partition=st.integers(0, 100),
        offset=st.integers(0, 2**40),
        key=st.one_of(st.none(), st.binary(max_size=16)),
        value=st.one_of(st.none(), st.binary(max_size=64)),
        headers=headers(values),
    )


def assert_valid_replay(record: Record, replayed: OutgoingRecord) -> None:
    assert isinstance(replayed.topic, str)
    assert (replayed.key, replayed.value) == (record.key, record.value or b"")
    kept = tuple((k, v) for k, v in record.headers if not k.startswith("wirebus_"))
    assert replayed.headers == kept


def test_a_dlq_record_with_text_headers_becomes_its_original_key_value_and_headers(
    fuzz_examples: int, figures: list[str]
) -> None:
    count = 0

    @settings_for(fuzz_examples)
    @given(dlq_records(TEXT_BYTES))
    def any_record(record: Record) -> None:
        nonlocal count
        count += 1
        try:
            replayed = replay_record(record)
        except UnreplayableRecord as exc:  # a topic name Kafka would refuse, or another DLQ
            assert "topic" in str(exc)  # noqa: PT017
            return
        assert_valid_replay(record, replayed)

    started = time.monotonic()
    any_record()
    elapsed = time.monotonic() - started
    figures.append(
        f"fuzz dlq replay_record: {count} records in {elapsed:.1f}s ({count / elapsed:.0f}/s)"
    )


def test_any_dlq_record_becomes_a_valid_replay_record_or_a_clear_error(fuzz_examples: int) -> None:
    @settings_for(fuzz_examples)
    @given(dlq_records(ANY_BYTES))
    def any_record(record: Record) -> None:
        try:
            replayed = replay_record(record)
        except WirebusError:
            return
        assert_valid_replay(record, replayed)

    any_record()


def test_a_replay_sends_back_every_readable_record_whatever_else_is_on_the_topic(
    fuzz_examples: int,
) -> None:
    @settings_for(max(fuzz_examples // 10, 10))
    @given(st.lists(headers(ANY_BYTES), min_size=1, max_size=5))
    def any_topic(garbled: list[tuple[tuple[str, bytes], ...]]) -> None:
        asyncio.run(replay_all(garbled))

    any_topic()


async def replay_all(garbled: list[tuple[tuple[str, bytes], ...]]) -> None:
    """Put the garbled records and one good one on a DLQ topic; replay; the good one is back."""
    broker = InMemoryBroker(partitions=1)
    good = OutgoingRecord("t.dlq", b"k", b"good", (("wirebus_original_topic", b"t"),))
    await broker.append([OutgoingRecord("t.dlq", None, b"bad", h) for h in garbled] + [good])
    port = broker.consumer(group=REPLAY_GROUP, topics=["t.dlq"])
    publisher = broker.publisher(EventRegistry(), source="fuzz")
    await asyncio.wait_for(replay(port, publisher, idle_seconds=0.05), 10)
    assert [r.value for r in broker.records("t")].count(b"good") == 1
