"""The broker conformance suite: what every ``EventPublisher`` + ``ConsumerPort`` pair must do.

Each check is an async function of a :class:`BrokerHarness`; ``CHECKS`` lists
them all. A broker adapter's tests run every check against its harness, with
fresh topics and groups per check (Watermill's ``TestPubSub`` in spirit)::

    @pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
    async def test_the_in_memory_broker_conforms(check: BrokerCheck) -> None:
        await check(InMemoryBrokerHarness())

The suite has no pytest dependency: a failed check raises ``AssertionError``
saying what was expected.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from google.protobuf import wrappers_pb2

from ..broker import ConsumerPort, EventPublisher, OutgoingRecord, Record, TopicPartition
from ..brokers.memory import InMemoryBroker
from ..codec import EventRegistry

__all__ = ["CHECKS", "BrokerCheck", "BrokerHarness", "InMemoryBrokerHarness"]

WITHIN = 60.0
"""Seconds a check waits for records before it fails (Kafka rebalances take seconds)."""


class BrokerHarness(Protocol):
    """What the suite needs of a broker: fresh topics and groups, publishers, consumers."""

    partitions: int
    """How many partitions each topic from :meth:`topic` has."""

    async def topic(self) -> str:
        """A topic no other check uses, with ``partitions`` partitions."""

    def group(self) -> str:
        """A consumer group no other check uses."""

    def publisher(
        self, registry: EventRegistry, *, source: str
    ) -> AbstractAsyncContextManager[EventPublisher]:
        """A publisher, started for the duration of the ``async with``."""

    def consumer(self, *, group: str, topics: Sequence[str]) -> ConsumerPort:
        """A consumer of ``group`` on ``topics`` (not started)."""


BrokerCheck = Callable[[BrokerHarness], Awaitable[None]]


class InMemoryBrokerHarness:
    """The suite's harness over one :class:`InMemoryBroker`.

    Example::

        for check in CHECKS:
            await check(InMemoryBrokerHarness())
    """

    def __init__(self, broker: InMemoryBroker | None = None) -> None:
        self.broker = broker if broker is not None else InMemoryBroker()
        self.partitions = self.broker.partitions
        self._names = itertools.count()

    async def topic(self) -> str:
        return f"suite-topic-{next(self._names)}"

    def group(self) -> str:
        return f"suite-group-{next(self._names)}"

    def publisher(
        self, registry: EventRegistry, *, source: str
    ) -> AbstractAsyncContextManager[EventPublisher]:
        return contextlib.nullcontext(self.broker.publisher(registry, source=source))

    def consumer(self, *, group: str, topics: Sequence[str]) -> ConsumerPort:
        return self.broker.consumer(group=group, topics=topics)


# ------------------------------------------------------------------ helpers


def _expect(condition: object, message: str) -> None:
    if not condition:
        raise AssertionError(message)


@contextlib.asynccontextmanager
async def _records_publisher(harness: BrokerHarness) -> AsyncIterator[EventPublisher]:
    async with harness.publisher(EventRegistry(), source="broker-suite") as publisher:
        yield publisher


@contextlib.asynccontextmanager
async def _consuming(harness: BrokerHarness, group: str, topic: str) -> AsyncIterator[ConsumerPort]:
    port = harness.consumer(group=group, topics=[topic])
    await port.start()
    try:
        yield port
    finally:
        await port.stop()


async def _read(port: ConsumerPort, count: int, *, within: float = WITHIN) -> list[Record]:
    """At least ``count`` records (partition order kept), fetching for at most ``within`` s."""
    records: list[Record] = []
    deadline = time.monotonic() + within
    while len(records) < count:
        _expect(time.monotonic() < deadline, f"read {len(records)} of {count} records")
        for batch in (await port.fetch(0.5)).values():
            records.extend(batch)
    return records


async def _read_until(port: ConsumerPort, last: bytes, *, within: float = WITHIN) -> list[Record]:
    """Every record up to the one whose value is ``last`` (a sentinel sent after the rest)."""
    records: list[Record] = []
    deadline = time.monotonic() + within
    while not any(r.value == last for r in records):
        _expect(time.monotonic() < deadline, f"the record {last!r} did not arrive")
        for batch in (await port.fetch(0.5)).values():
            records.extend(batch)
    return records


def _next_offsets(records: Sequence[Record]) -> dict[TopicPartition, int]:
    offsets: dict[TopicPartition, int] = {}
    for r in records:
        offsets[(r.topic, r.partition)] = max(offsets.get((r.topic, r.partition), 0), r.offset + 1)
    return offsets


def _values(records: Sequence[Record]) -> list[bytes | None]:
    return [r.value for r in records]


def _same_values(received: Sequence[Record], sent: Sequence[OutgoingRecord]) -> bool:
    return sorted(r.value or b"" for r in received) == sorted(r.value for r in sent)


# ------------------------------------------------------------------ the checks


async def a_record_round_trips_with_key_value_and_headers_byte_for_byte(
    harness: BrokerHarness,
) -> None:
    topic, group = await harness.topic(), harness.group()
    headers = (
        ("ce_id", b"8c4a7c1e-2b6f-4a53-9d0e-3c2f1a0b9e77"),
        ("x-binary", bytes(range(256))),
        ("x-repeated", b"first"),
        ("x-repeated", b"second"),
    )
    sent = [
        OutgoingRecord(topic, b"key-\x00\xff", b"\x08\x96\x01value\x00", headers),
        OutgoingRecord(topic, None, b"unkeyed", (("only", b"one"),)),
    ]
    async with _records_publisher(harness) as publisher:
        await publisher.send_records(sent)
    async with _consuming(harness, group, topic) as port:
        got = {r.value: r for r in await _read(port, 2)}
    for record in sent:
        received = got.get(record.value)
        if received is None:
            raise AssertionError(f"{record.value!r} was not consumed")
        _expect(received.topic == topic, f"topic {received.topic!r}, not {topic!r}")
        _expect(received.key == record.key, f"key {received.key!r}, not {record.key!r}")
        _expect(
            tuple(received.headers) == record.headers,
            f"headers {received.headers!r}, not {record.headers!r}",
        )


async def one_keys_records_stay_in_order_on_one_partition(harness: BrokerHarness) -> None:
    topic, group = await harness.topic(), harness.group()
    keys = [f"aggregate-{k}".encode() for k in range(5)]
    batch = [OutgoingRecord(topic, keys[i % 5], b"%d" % i, ()) for i in range(100)]
    async with _records_publisher(harness) as publisher:
        await publisher.send_records(batch[:60])  # one call, then one record per call
        for record in batch[60:]:
            await publisher.send_records([record])
    async with _consuming(harness, group, topic) as port:
        records = await _read(port, len(batch))
    for key in keys:
        mine = [r for r in records if r.key == key]
        partitions = {r.partition for r in mine}
        _expect(len(partitions) == 1, f"{key!r} is spread over partitions {sorted(partitions)}")
        expected = [r.value for r in batch if r.key == key]
        _expect(_values(mine) == expected, f"{key!r} arrived as {_values(mine)}, not {expected}")


async def a_new_consumer_of_the_group_resumes_from_committed_offsets(
    harness: BrokerHarness,
) -> None:
    topic, group = await harness.topic(), harness.group()
    first = [OutgoingRecord(topic, b"k%d" % i, b"first-%d" % i, ()) for i in range(10)]
    async with _records_publisher(harness) as publisher:
        await publisher.send_records(first)
        async with _consuming(harness, group, topic) as port:
            await port.commit(_next_offsets(await _read(port, len(first))))
        await publisher.send_records([OutgoingRecord(topic, b"k0", b"after", ())])
    async with _consuming(harness, group, topic) as port:
        again = await _read_until(port, b"after")
    _expect(_values(again) == [b"after"], f"committed records came back: {_values(again)}")


async def uncommitted_records_are_delivered_again(harness: BrokerHarness) -> None:
    topic, group = await harness.topic(), harness.group()
    sent = [OutgoingRecord(topic, b"one-key", b"%d" % i, ()) for i in range(10)]
    async with _records_publisher(harness) as publisher:
        await publisher.send_records(sent)
    async with _consuming(harness, group, topic) as port:
        records = await _read(port, len(sent))
        await port.commit(_next_offsets(records[:4]))  # the last six stay uncommitted
    async with _consuming(harness, group, topic) as port:
        again = await _read(port, 6)
    expected = [r.value for r in sent[4:]]
    _expect(_values(again) == expected, f"delivered again: {_values(again)}, not {expected}")


async def seek_reads_a_partition_again_from_an_offset(harness: BrokerHarness) -> None:
    topic, group = await harness.topic(), harness.group()
    sent = [OutgoingRecord(topic, b"one-key", b"%d" % i, ()) for i in range(5)]
    async with _records_publisher(harness) as publisher:
        await publisher.send_records(sent)
    async with _consuming(harness, group, topic) as port:
        records = await _read(port, len(sent))
        start = records[2]
        await port.seek((topic, start.partition), start.offset)
        again = await _read(port, 3)
    _expect(_values(again) == [b"2", b"3", b"4"], f"after seek: {_values(again)}")
    _expect(again[0].offset == start.offset, f"after seek from offset {again[0].offset}")


async def send_records_settled_reports_one_result_per_record(harness: BrokerHarness) -> None:
    topic, group = await harness.topic(), harness.group()
    sent = [OutgoingRecord(topic, b"k%d" % (i % 3), b"%d" % i, ()) for i in range(7)]
    async with _records_publisher(harness) as publisher:
        results = await publisher.send_records_settled(sent)
        nothing = await publisher.send_records_settled([])
    _expect(results == [None] * len(sent), f"settled results {results!r}")
    _expect(nothing == [], f"settling no records gave {nothing!r}")
    async with _consuming(harness, group, topic) as port:
        records = await _read(port, len(sent))
    _expect(_same_values(records, sent), f"landed: {_values(records)}, not every record")


async def separate_groups_keep_separate_offsets(harness: BrokerHarness) -> None:
    topic, first_group, second_group = await harness.topic(), harness.group(), harness.group()
    sent = [OutgoingRecord(topic, b"k%d" % i, b"%d" % i, ()) for i in range(6)]
    async with _records_publisher(harness) as publisher:
        await publisher.send_records(sent)
    async with _consuming(harness, first_group, topic) as port:
        await port.commit(_next_offsets(await _read(port, len(sent))))
    async with _consuming(harness, second_group, topic) as port:
        records = await _read(port, len(sent))
    _expect(
        _same_values(records, sent),
        f"a second group read {_values(records)}, not every record",
    )


async def a_published_event_is_its_protobuf_bytes_with_cloudevents_headers(
    harness: BrokerHarness,
) -> None:
    topic, group = await harness.topic(), harness.group()
    registry = EventRegistry()
    registry.add(wrappers_pb2.StringValue, topic=topic, key="value")
    event = wrappers_pb2.StringValue(value="order-42")
    async with harness.publisher(registry, source="broker-suite") as publisher:
        await publisher.publish(event, subject="orders/42")
        await publisher.publish_many([event, event])
    async with _consuming(harness, group, topic) as port:
        records = await _read(port, 3)
    for record in records:
        _expect(record.value == event.SerializeToString(), f"value {record.value!r}")
        _expect(record.key == b"order-42", f"key {record.key!r}")
        _expect(record.header("ce_type") == b"google.protobuf.StringValue", "ce_type")
        _expect(record.header("ce_source") == b"broker-suite", "ce_source")
    ids = {r.header("ce_id") for r in records}
    _expect(len(ids) == 3, f"ce_id repeated: {ids}")
    subjects = [r.header("ce_subject") for r in records]
    _expect(subjects.count(b"orders/42") == 1, f"ce_subject {subjects}")


async def end_offsets_name_every_partition_and_the_next_offset_to_write(
    harness: BrokerHarness,
) -> None:
    topic, group = await harness.topic(), harness.group()
    sent = [OutgoingRecord(topic, b"k%d" % i, b"%d" % i, ()) for i in range(7)]
    async with _records_publisher(harness) as publisher:
        await publisher.send_records(sent)
    async with _consuming(harness, group, topic) as port:
        ends = dict(await port.end_offsets())
        records = await _read(port, len(sent))
    _expect(len(ends) >= 1 and all(t == topic for t, _ in ends), f"end offsets {ends}")
    _expect(sum(ends.values()) == len(sent), f"end offsets {ends} for {len(sent)} records")
    last = {(r.topic, r.partition): r.offset + 1 for r in records}
    _expect(all(ends[tp] == o for tp, o in last.items()), f"ends {ends}, read up to {last}")


CHECKS: tuple[BrokerCheck, ...] = (
    a_record_round_trips_with_key_value_and_headers_byte_for_byte,
    one_keys_records_stay_in_order_on_one_partition,
    a_new_consumer_of_the_group_resumes_from_committed_offsets,
    uncommitted_records_are_delivered_again,
    seek_reads_a_partition_again_from_an_offset,
    send_records_settled_reports_one_result_per_record,
    separate_groups_keep_separate_offsets,
    a_published_event_is_its_protobuf_bytes_with_cloudevents_headers,
    end_offsets_name_every_partition_and_the_next_offset_to_write,
)
"""Every check of the suite, in the order they are best read."""
