"""``KafkaEventPublisher``: the aiokafka producer behind the ``EventPublisher`` port.

Idempotent (``enable_idempotence=True``, ``acks="all"``), batching through
``linger_ms`` and optional compression. ``publish`` returns once the broker
acknowledged the record; a failure raises :class:`~wirebus.broker.PublishError`
naming the topic and the reason.

Example::

    async with KafkaEventPublisher("127.0.0.1:9092", registry, source="shop") as publisher:
        await publisher.publish(OrderPlaced(...))
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaError,
    KafkaTimeoutError,
    OutOfOrderSequenceNumber,
    UnknownProducerId,
)

from .._lifecycle import AsyncLifecycle
from ..broker import EventEncoder, HeldBack, OutgoingRecord, PublishError
from ..codec import EventRegistry
from ..errors import ConfigurationError, LifecycleError

__all__ = ["KafkaEventPublisher"]

log = logging.getLogger(__name__)

Compression = Literal["gzip", "snappy", "lz4", "zstd"]


class KafkaEventPublisher(AsyncLifecycle):
    """Publishes events to Kafka; an async context manager with an idempotent ``stop``."""

    def __init__(
        self,
        bootstrap_servers: str,
        registry: EventRegistry,
        *,
        source: str,
        linger_ms: int = 5,
        compression: Compression | None = None,
        max_batch_bytes: int = 1024 * 1024,
        request_timeout_ms: int = 30_000,
        client_id: str = "wirebus",
    ) -> None:
        if not bootstrap_servers:
            raise ConfigurationError("bootstrap_servers must not be empty")
        if linger_ms < 0:
            raise ConfigurationError(f"linger_ms must be >= 0, not {linger_ms}")
        self.encoder = EventEncoder(registry, source=source)
        self._options: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers,
            "client_id": client_id,
            "enable_idempotence": True,
            "acks": "all",
            "linger_ms": linger_ms,
            "compression_type": compression,
            "max_batch_size": max_batch_bytes,
            "max_request_size": max_batch_bytes,
            "request_timeout_ms": request_timeout_ms,
        }
        self._producer: AIOKafkaProducer | None = None
        self._state = "new"

    async def start(self) -> None:
        """Connect to the cluster (raises ``PublishError`` if it cannot)."""
        if self._state != "new":
            raise LifecycleError(f"a {self._state} publisher cannot be started again")
        self._state = "started"
        producer = AIOKafkaProducer(**self._options)
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            self._state = "stopped"
            raise PublishError(
                "*", f"cannot connect to {self._options['bootstrap_servers']}: {exc}"
            ) from exc
        self._producer = producer

    async def stop(self) -> None:
        """Flush pending records and disconnect (idempotent)."""
        self._state = "stopped"
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    # ------------------------------------------------------------ publishing

    async def publish(self, event: Any, *, subject: str | None = None) -> None:
        """Encode ``event`` with a new ``ce_id`` and wait for the broker's ack."""
        await self.send_records([self.encoder.record(event, subject=subject)])

    async def publish_many(self, events: Iterable[Any]) -> None:
        """Publish several events, batched; returns when all are acknowledged.

        Each event is handed to the producer as soon as it is encoded, so
        encoding overlaps with the producer's network I/O.
        """
        await self.send_records(self.encoder.iter_records(events))

    async def send_records_settled(
        self, records: Sequence[OutgoingRecord]
    ) -> list[BaseException | None]:
        """Send records; per record, ``None`` once acknowledged or the error it failed with.

        Errors keep aiokafka's ``retriable`` flag (a broker that is down
        fails every record retriably; a record that is too large does not).
        """
        producer = self._producer
        if producer is None:
            raise LifecycleError("the publisher is not started")
        pending: list[tuple[str, Any]] = []
        refused: set[tuple[str, bytes]] = set()  # keys with a record refused at send()
        for record in records:
            if record.key is not None and (record.topic, record.key) in refused:
                reason = "an earlier record of its key was refused"
                pending.append((record.topic, HeldBack(record.topic, reason)))
                continue
            try:
                future = await producer.send(
                    record.topic, value=record.value, key=record.key, headers=list(record.headers)
                )
            except KafkaError as exc:  # refused before sending (too large, ...)
                if record.key is not None:
                    refused.add((record.topic, record.key))
                pending.append((record.topic, _publish_error(record.topic, exc)))
            else:
                pending.append((record.topic, future))
        results: list[BaseException | None] = []
        for topic, item in pending:
            results.append(item if isinstance(item, BaseException) else await _settle(topic, item))
        if any(isinstance(r, PublishError) and r.producer_state for r in results):
            await self._renew_producer()
        return results

    async def _renew_producer(self) -> None:
        """A new producer id after the broker lost our sequence state (restart mid-send)."""
        log.warning("the broker rejected the producer's sequence state: starting a new producer")
        old, self._producer = self._producer, None
        if old is not None:
            await old.stop()
        producer = AIOKafkaProducer(**self._options)
        await producer.start()
        self._producer = producer

    async def send_records(self, records: Iterable[OutgoingRecord]) -> None:
        """Send records as they are; all acknowledged, or ``PublishError``."""
        producer = self._producer
        if producer is None:
            raise LifecycleError("the publisher is not started")
        futures = []
        for record in records:
            try:
                future = await producer.send(
                    record.topic, value=record.value, key=record.key, headers=list(record.headers)
                )
            except KafkaError as exc:
                raise PublishError(record.topic, _reason(exc)) from exc
            futures.append((record.topic, future))
        for topic, future in futures:
            try:
                await future
            except KafkaError as exc:
                raise PublishError(topic, _reason(exc)) from exc
            except asyncio.CancelledError:
                raise


async def _settle(topic: str, future: Any) -> BaseException | None:
    try:
        await future
    except KafkaError as exc:
        return _publish_error(topic, exc)
    return None


def _publish_error(topic: str, exc: KafkaError) -> PublishError:
    """Wrap an aiokafka error; timeouts and lost producer state count as retriable."""
    error = PublishError(topic, _reason(exc))
    error.producer_state = isinstance(exc, _PRODUCER_STATE)
    error.retriable = (
        bool(exc.retriable) or isinstance(exc, KafkaTimeoutError) or error.producer_state
    )
    error.__cause__ = exc
    return error


# The broker lost (or never had) this producer's sequence state, as after a
# restart with requests in flight: the records are fine, the producer is not.
_PRODUCER_STATE = (OutOfOrderSequenceNumber, UnknownProducerId)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
