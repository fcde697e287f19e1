"""Broker ports: records, the ``EventPublisher`` protocol, and the event encoder.

Implementations: ``wirebus.kafka.KafkaEventPublisher`` (aiokafka) and
``wirebus.brokers.memory.InMemoryBroker`` (tests and the embedded default).
Handlers never see any of this: they emit events, and the app hands them to
whichever publisher it runs with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import grpc

from .cloudevents import Attributes
from .codec import EventRegistry
from .errors import ConfigurationError, WirebusError

__all__ = [
    "EventEncoder",
    "EventPublisher",
    "OutgoingRecord",
    "PublishError",
    "Record",
    "UnknownEventType",
]

Headers = tuple[tuple[str, bytes], ...]


class PublishError(WirebusError):
    """The broker did not acknowledge a record; says which topic and why."""

    code = grpc.StatusCode.UNAVAILABLE
    retriable = True

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"publishing to {topic!r} failed: {reason}")
        self.topic = topic
        self.reason = reason


class UnknownEventType(ConfigurationError):
    """An event type that is not registered with the app cannot be published."""


@dataclasses.dataclass(frozen=True, slots=True)
class OutgoingRecord:
    """A record to publish: ``value`` is the serialized protobuf message, nothing else."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    """A record as consumed from a topic partition."""

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


class EventEncoder:
    """Turns events into records: protobuf bytes plus CloudEvents headers."""

    def __init__(self, registry: EventRegistry, *, source: str) -> None:
        if not source:
            raise ConfigurationError("source= (the producing service's name) must not be empty")
        self.registry = registry
        self.source = source

    def record(
        self,
        event: Any,
        *,
        attributes: Attributes | None = None,
        subject: str | None = None,
    ) -> OutgoingRecord:
        """Encode ``event``; new attributes (a fresh ``ce_id``) unless given."""
        kind = self.registry.by_type(type(event))
        if kind is None:
            raise UnknownEventType(
                f"{type(event).__qualname__} is not registered: add it to App(events=[...])"
                " or handle it somewhere in the app"
            )
        attrs = attributes or Attributes.new(
            source=self.source, type=kind.full_name, dataschema=kind.dataschema, subject=subject
        )
        return OutgoingRecord(
            topic=kind.topic,
            key=kind.key_bytes(event),
            value=kind.encode(event),
            headers=tuple(attrs.headers()),
        )

    def records(self, events: Iterable[Any]) -> list[OutgoingRecord]:
        """Encode several events."""
        return [self.record(e) for e in events]
