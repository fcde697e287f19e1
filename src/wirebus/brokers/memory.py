"""``InMemoryBroker``: Kafka's model in one process, for tests and the embedded default.

Topics have partitions; a keyed record goes where Kafka's default
partitioner would put it with the same partition count (murmur2, see
:mod:`wirebus.brokers.partitioner`), so one aggregate's events stay in order
on one partition; an unkeyed one goes round-robin. Consumer groups keep
committed offsets; a consumer that is stopped and started again resumes from
them, and uncommitted records are delivered again, exactly the at-least-once
behaviour the Kafka runner has.

A record larger than ``max_record_bytes`` (the Kafka producer's limit by
default, :data:`~wirebus.outbox.rows.MAX_RECORD_BYTES`) is refused as the
producer refuses it: a non-retriable ``PublishError``, the later records of
its key held back.

**Acknowledged once handled** (``publisher(..., acks="handled")``, what the
embedded runtime's relay uses): the records live only in this process, so an
ack on append would let the relay delete outbox rows whose records vanish
with the process. Such a publisher returns for a record only once every
consumer group subscribed to its topic (by :meth:`InMemoryBroker.consumer`)
has committed past it -- after its handlers ran and their transaction
committed. When a group's consumer stops first, the records it did not
handle fail with a retriable ``PublishError``; so do records sent while a
subscribed group has no running consumer, and they are not stored. The
relay then leaves their rows pending in the outbox, for the next start.
A record of a topic no group subscribes to is acknowledged on append.

Example::

    broker = InMemoryBroker()
    publisher = broker.publisher(app.registry(), source="shop")
    await publisher.publish(OrderPlaced(...))
    consumer = broker.consumer(group="payments", topics=["shop.orders.v1"])
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from ..broker import HeldBack, OutgoingRecord, PublishError, Record, TopicPartition
from ..codec import EventRegistry
from ..encoding import EventEncoder
from ..errors import ConfigurationError
from ..outbox.rows import MAX_RECORD_BYTES, record_size
from ._handled import HandledAcks
from .partitioner import key_partition

if TYPE_CHECKING:
    from ..tracing import Tracing

__all__ = ["InMemoryBroker", "InMemoryConsumer", "InMemoryEventPublisher"]


class InMemoryBroker:
    """Partitioned topics and consumer-group offsets in memory."""

    def __init__(self, *, partitions: int = 3, max_record_bytes: int = MAX_RECORD_BYTES) -> None:
        if partitions < 1:
            raise ConfigurationError(f"partitions must be at least 1, not {partitions}")
        if max_record_bytes < 1:
            raise ConfigurationError(f"max_record_bytes must be positive, not {max_record_bytes}")
        self.partitions = partitions
        self.max_record_bytes = max_record_bytes
        """Records larger than this (as Kafka's producer sizes them) are refused."""
        self.acks = HandledAcks(self.committed)
        self._topics: dict[str, list[list[Record]]] = {}
        self._committed: dict[tuple[str, TopicPartition], int] = {}
        self._round_robin = itertools.count()
        self._waiters: set[asyncio.Event] = set()

    def _partitions(self, topic: str) -> list[list[Record]]:
        if topic not in self._topics:
            self._topics[topic] = [[] for _ in range(self.partitions)]
        return self._topics[topic]

    async def append(self, records: Sequence[OutgoingRecord]) -> list[Record]:
        """Store records as a broker would; consumers waiting are woken."""
        stored = []
        now = int(time.time() * 1000)
        for r in records:
            parts = self._partitions(r.topic)
            index = (
                key_partition(r.key, len(parts))
                if r.key is not None
                else next(self._round_robin) % len(parts)
            )
            log = parts[index]
            record = Record(r.topic, index, len(log), r.key, r.value, r.headers, now)
            log.append(record)
            stored.append(record)
        for waiter in self._waiters:
            waiter.set()
        return stored

    def partition_for(self, key: bytes) -> int:
        """The partition a record with ``key`` goes to (as on Kafka with as many partitions).

        Example::

            broker.partition_for(b"o-1")   # Kafka would pick the same of 3 partitions
        """
        return key_partition(key, self.partitions)

    def records(self, topic: str) -> list[Record]:
        """Every record of ``topic``, partition by partition (for tests)."""
        return [r for part in self._topics.get(topic, []) for r in part]

    def topics(self) -> list[str]:
        """Topics that hold or held records."""
        return sorted(self._topics)

    def committed(self, group: str, partition: TopicPartition) -> int:
        """The committed offset of ``group`` on ``partition`` (0 if none)."""
        return self._committed.get((group, partition), 0)

    def publisher(
        self,
        registry: EventRegistry,
        *,
        source: str,
        acks: Literal["appended", "handled"] = "appended",
        tracing: Tracing | None = None,
    ) -> InMemoryEventPublisher:
        """An ``EventPublisher`` writing to this broker.

        ``acks="handled"``: a send returns once the subscribed groups
        committed past its records (see the module docstring).

        Example::

            relay_publisher = broker.publisher(registry, source="shop", acks="handled")
        """
        encoder = EventEncoder(registry, source=source, tracing=tracing)
        return InMemoryEventPublisher(self, encoder, handled=acks == "handled")

    def consumer(self, *, group: str, topics: Iterable[str]) -> InMemoryConsumer:
        """A ``ConsumerPort`` of ``group`` on ``topics``; ``group`` subscribes to them now."""
        consumer = InMemoryConsumer(self, group, list(topics))
        self.acks.subscribe(group, consumer.topics)
        return consumer

    # -- used by InMemoryConsumer -----------------------------------------

    def _commit(self, group: str, offsets: Mapping[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            self._committed[(group, tp)] = offset
        self.acks.committed_to(offsets)

    @property
    def waiting(self) -> int:
        """How many fetches are waiting for new records right now."""
        return len(self._waiters)

    async def _wait_for_change(self, seconds: float, signal: asyncio.Event) -> None:
        """Until records are appended or ``signal`` is set otherwise, at most ``seconds``."""
        self._waiters.add(signal)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(signal.wait(), seconds)
        finally:
            self._waiters.discard(signal)


class InMemoryEventPublisher:
    """``EventPublisher`` for an :class:`InMemoryBroker` (``handled``: acks once consumed)."""

    def __init__(
        self, broker: InMemoryBroker, encoder: EventEncoder, *, handled: bool = False
    ) -> None:
        self.broker = broker
        self.encoder = encoder
        self.handled = handled
        """Whether sends return only once the subscribed groups handled their records."""
        self._small = broker.max_record_bytes // 2

    async def publish(self, event: Any, *, subject: str | None = None) -> None:
        await self.send_records([self.encoder.record(event, subject=subject)])

    async def publish_many(self, events: Iterable[Any]) -> None:
        await self.send_records(self.encoder.records(events))

    async def send_records(self, records: Sequence[OutgoingRecord]) -> None:
        for error in await self.send_records_settled(records):
            if error is not None:
                raise error

    async def send_records_settled(
        self, records: Sequence[OutgoingRecord]
    ) -> list[BaseException | None]:
        small = self._small
        refused = [
            None if len(r.value) <= small else self._too_large(r) for r in records
        ]  # a value under half the limit: only outsized headers could make it too large
        results: list[BaseException | None]
        if any(refused):
            results, records = _settle_refused(records, refused)
        else:
            results = [None] * len(records)
        acks = self.broker.acks
        gone = acks.gone() if self.handled else None
        if gone is not None:
            results, records = _settle_refused(records, [gone(r) for r in records], results)
        stored = await self.broker.append(records)
        if self.handled and stored:
            _fill(results, await acks.until_handled(stored))
        return results

    def _too_large(self, record: OutgoingRecord) -> PublishError | None:
        limit = self.broker.max_record_bytes
        size = record_size(record.key, record.value, record.headers)
        if size <= limit:
            return None
        error = PublishError(
            record.topic, f"the record is {size} bytes, more than max_record_bytes ({limit})"
        )
        error.retriable = False
        return error


def _settle_refused(
    records: Sequence[OutgoingRecord],
    refused: Sequence[PublishError | None],
    results: list[BaseException | None] | None = None,
) -> tuple[list[BaseException | None], list[OutgoingRecord]]:
    """Results with the refused records' errors, later records of their keys held back;
    and the records still to send. ``results`` (of earlier refusals) has a slot per record,
    ``None`` where it may still go."""
    settled: list[BaseException | None] = [None] * len(records) if results is None else results
    keys: set[tuple[str, bytes]] = set()
    sending: list[OutgoingRecord] = []
    slots = [i for i, r in enumerate(settled) if r is None]
    for slot, record, error in zip(slots, records, refused, strict=True):
        key = (record.topic, record.key) if record.key is not None else None
        if error is None and key is not None and key in keys:
            error = HeldBack(record.topic, "an earlier record of its key was refused")
        if error is None:
            sending.append(record)
            continue
        settled[slot] = error
        if key is not None:
            keys.add(key)
    return settled, sending


def _fill(results: list[BaseException | None], outcomes: Sequence[BaseException | None]) -> None:
    """Put the outcomes of the records sent into the slots still open, in order."""
    it = iter(outcomes)
    for i, result in enumerate(results):
        if result is None:
            results[i] = next(it)


class InMemoryConsumer:
    """``ConsumerPort`` of one group member; positions start at the committed offsets.

    :meth:`wake` ends a waiting :meth:`fetch` at once (a stopping runner calls it).
    """

    def __init__(self, broker: InMemoryBroker, group: str, topics: list[str]) -> None:
        self.broker = broker
        self.group = group
        self.topics = topics
        self.max_records = 500
        self._positions: dict[TopicPartition, int] = {}
        self._signal = asyncio.Event()  # set by appends while fetch waits, and by wake()
        self._state = "new"

    async def start(self) -> None:
        self._positions.clear()
        if self._state != "running":
            self._state = "running"
            self.broker.acks.started(self.group)

    async def stop(self) -> None:
        """Leave the group (idempotent); sends waiting for it to handle records are released."""
        if self._state != "stopped":
            was_running, self._state = self._state == "running", "stopped"
            self.broker.acks.stopped(self.group, was_running=was_running)

    def guard_rebalance(self, lock: asyncio.Lock) -> None:
        return None  # one member per group in-process: nothing is ever revoked

    def wake(self) -> None:
        """End the waiting :meth:`fetch` (or the next one) now, with what is there, maybe nothing.

        Example::

            consumer.wake()     # a fetch(30.0) in another task returns at once
        """
        self._signal.set()

    async def fetch(self, wait: float) -> Mapping[TopicPartition, Sequence[Record]]:
        batch = self._available()
        if not batch and not self._signal.is_set():
            await self.broker._wait_for_change(wait, self._signal)
            batch = self._available()
        self._signal.clear()
        for tp, records in batch.items():
            self._positions[tp] = records[-1].offset + 1
        return batch

    def _available(self) -> dict[TopicPartition, list[Record]]:
        batch: dict[TopicPartition, list[Record]] = {}
        for topic in self.topics:
            for index, log in enumerate(self.broker._topics.get(topic, ())):
                tp = (topic, index)
                position = self._positions.get(tp)
                if position is None:
                    position = self.broker.committed(self.group, tp)
                if position < len(log):
                    batch[tp] = log[position : position + self.max_records]
        return batch

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.broker._commit(self.group, offsets)

    async def seek(self, partition: TopicPartition, offset: int) -> None:
        self._positions[partition] = offset

    async def end_offsets(self) -> Mapping[TopicPartition, int]:
        return {
            (topic, index): len(log)
            for topic in self.topics
            for index, log in enumerate(self.broker._topics.get(topic, ()))
        }
