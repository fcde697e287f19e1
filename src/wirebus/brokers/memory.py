"""``InMemoryBroker``: Kafka's model in one process, for tests and the embedded default.

Topics have partitions; a keyed record goes where Kafka's default
partitioner would put it with the same partition count (murmur2, see
:mod:`wirebus.brokers.partitioner`), so one aggregate's events stay in order
on one partition; an unkeyed one goes round-robin. Consumer groups keep
committed offsets; a consumer that is stopped and started again resumes from
them, and uncommitted records are delivered again, exactly the at-least-once
behaviour the Kafka runner has.

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
from typing import Any

from ..broker import OutgoingRecord, Record, TopicPartition
from ..codec import EventRegistry
from ..encoding import EventEncoder
from ..errors import ConfigurationError
from .partitioner import key_partition

__all__ = ["InMemoryBroker", "InMemoryConsumer", "InMemoryEventPublisher"]


class InMemoryBroker:
    """Partitioned topics and consumer-group offsets in memory."""

    def __init__(self, *, partitions: int = 3) -> None:
        if partitions < 1:
            raise ConfigurationError(f"partitions must be at least 1, not {partitions}")
        self.partitions = partitions
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

    def publisher(self, registry: EventRegistry, *, source: str) -> InMemoryEventPublisher:
        """An ``EventPublisher`` writing to this broker."""
        return InMemoryEventPublisher(self, EventEncoder(registry, source=source))

    def consumer(self, *, group: str, topics: Iterable[str]) -> InMemoryConsumer:
        """A ``ConsumerPort`` of ``group`` on ``topics``."""
        return InMemoryConsumer(self, group, list(topics))

    # -- used by InMemoryConsumer -----------------------------------------

    def _commit(self, group: str, offsets: Mapping[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            self._committed[(group, tp)] = offset

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
    """``EventPublisher`` for an :class:`InMemoryBroker`."""

    def __init__(self, broker: InMemoryBroker, encoder: EventEncoder) -> None:
        self.broker = broker
        self.encoder = encoder

    async def publish(self, event: Any, *, subject: str | None = None) -> None:
        await self.broker.append([self.encoder.record(event, subject=subject)])

    async def publish_many(self, events: Iterable[Any]) -> None:
        await self.broker.append(self.encoder.records(events))

    async def send_records(self, records: Sequence[OutgoingRecord]) -> None:
        await self.broker.append(records)

    async def send_records_settled(
        self, records: Sequence[OutgoingRecord]
    ) -> list[BaseException | None]:
        await self.broker.append(records)
        return [None] * len(records)


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

    async def start(self) -> None:
        self._positions.clear()

    async def stop(self) -> None:
        return None

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
