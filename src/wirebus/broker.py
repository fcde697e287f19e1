"""Broker ports: records, ``EventPublisher`` and ``ConsumerPort``, and their errors.

Implementations: ``wirebus.kafka.KafkaEventPublisher`` / ``KafkaConsumer``
(aiokafka) and ``wirebus.brokers.memory.InMemoryBroker`` (tests and the
embedded default); ``wirebus.testing.broker_suite`` is the conformance suite
every implementation passes. Handlers never see any of this: they emit
events, and the app hands them to whichever publisher it runs with. Turning
events into records is ``wirebus.encoding``'s business.

Example::

    async def forward(records: Sequence[Record], publisher: EventPublisher) -> None:
        await publisher.send_records([OutgoingRecord(r.topic, r.key, r.value or b"", r.headers)
                                      for r in records])
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from .errors import HeldBack, PublishError, UnknownEventType

if TYPE_CHECKING:  # moved to wirebus.encoding; re-exported lazily (it imports this module)
    from .encoding import EventEncoder, new_event_id, now_rfc3339

__all__ = [
    "ConsumerPort",
    "EventEncoder",
    "EventPublisher",
    "HeldBack",
    "OutgoingRecord",
    "PublishError",
    "Record",
    "TopicPartition",
    "UnknownEventType",
    "new_event_id",
    "now_rfc3339",
]

Headers = tuple[tuple[str, bytes], ...]
TopicPartition = tuple[str, int]


class OutgoingRecord(NamedTuple):
    """A record to publish: ``value`` is the serialized protobuf message, nothing else.

    A named tuple rather than a frozen dataclass: one is built per event on the
    hot path, and a frozen dataclass costs ~1 µs more to construct.
    """

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers


class Record(NamedTuple):
    """A record as consumed from a topic partition (a named tuple, like ``OutgoingRecord``)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp_ms: int = 0

    def header(self, name: str) -> bytes | None:
        """The first value of header ``name``, if present."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


class EventPublisher(Protocol):
    """Publishes events, or records already encoded, and waits for acknowledgement."""

    async def publish(self, event: Any, *, subject: str | None = None) -> None:
        """Encode ``event`` (new ``ce_id``) and publish it."""

    async def publish_many(self, events: Iterable[Any]) -> None:
        """Publish several events; returns when all are acknowledged."""

    async def send_records(self, records: Sequence[OutgoingRecord]) -> None:
        """Publish records as they are (relay, DLQ replay); raise ``PublishError``."""

    async def send_records_settled(
        self, records: Sequence[OutgoingRecord]
    ) -> list[BaseException | None]:
        """Publish records; per record ``None`` (acknowledged) or its error (the relay)."""


class ConsumerPort(Protocol):
    """What the runner needs from a broker's consumer (Kafka or in-memory)."""

    async def start(self) -> None:
        """Join the group and subscribe."""

    async def stop(self) -> None:
        """Leave the group (idempotent)."""

    async def fetch(self, wait: float) -> Mapping[TopicPartition, Sequence[Record]]:
        """The next records per partition, waiting at most ``wait`` seconds."""

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit ``offsets`` (the next offset to read, per partition)."""

    async def seek(self, partition: TopicPartition, offset: int) -> None:
        """Read ``partition`` again from ``offset``."""

    async def end_offsets(self) -> Mapping[TopicPartition, int]:
        """Every partition of the subscribed topics with its end offset now (next to write)."""

    def guard_rebalance(self, lock: asyncio.Lock) -> None:
        """Hold ``lock`` while giving up partitions, so in-flight work commits first."""


_MOVED_TO_ENCODING = frozenset(("EventEncoder", "new_event_id", "now_rfc3339"))


def __getattr__(name: str) -> Any:
    """The encoding names that lived here before ``wirebus.encoding`` (kept for importers)."""
    if name in _MOVED_TO_ENCODING:
        from . import encoding

        return getattr(encoding, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
