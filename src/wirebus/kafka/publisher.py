"""``KafkaEventPublisher``: the aiokafka producer behind the ``EventPublisher`` port.

Idempotent (``enable_idempotence=True``, ``acks="all"``), batching through
``linger_ms`` and optional compression. Many records for one partition in a
call go out as a batch of the publisher's own (:mod:`wirebus.kafka.batching`,
the only use of aiokafka's private API); without it (``own_batches=False``,
or an aiokafka whose private API changed) every record goes through the
public ``AIOKafkaProducer.send()``. ``publish`` returns once the broker
acknowledged the record; a failure raises :class:`~wirebus.broker.PublishError`
naming the topic and the reason.

Example::

    async with KafkaEventPublisher("127.0.0.1:9092", registry, source="shop") as publisher:
        await publisher.publish(OrderPlaced(...))
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    UnknownProducerId,
)

from .._lifecycle import AsyncLifecycle
from ..broker import HeldBack, OutgoingRecord, PublishError
from ..brokers.partitioner import partition_for
from ..codec import EventRegistry
from ..encoding import EventEncoder
from ..errors import ConfigurationError, LifecycleError
from ..kafka_security import PLAINTEXT, KafkaSecurity
from .batching import Append, OwnBatches, own_batches

if TYPE_CHECKING:
    from ..tracing import Tracing

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
        own_batches: bool = True,
        security: KafkaSecurity | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        if not bootstrap_servers:
            raise ConfigurationError("bootstrap_servers must not be empty")
        if linger_ms < 0:
            raise ConfigurationError(f"linger_ms must be >= 0, not {linger_ms}")
        self.encoder = EventEncoder(registry, source=source, tracing=tracing)
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
            **(security or PLAINTEXT).client_options(),
        }
        self._producer: AIOKafkaProducer | None = None
        self._state = "new"
        self._own_batches = own_batches
        self._batches: OwnBatches | None = None

    @property
    def max_record_bytes(self) -> int:
        """The largest record this producer sends (its ``max_request_size``: ``max_batch_bytes``).

        The unit of work refuses, at commit, an event whose record is larger
        than :data:`wirebus.outbox.rows.MAX_RECORD_BYTES`, this limit's
        default; size records with :func:`wirebus.outbox.rows.record_size`.

        Example::

            record_size(record.key, record.value, record.headers) <= publisher.max_record_bytes
        """
        limit: int = self._options["max_request_size"]
        return limit

    @property
    def batching(self) -> bool:
        """Whether large per-partition calls go out as the publisher's own batches."""
        return self._batches is not None

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
        if self._own_batches and _OWN_BATCHES is not None and _OWN_BATCHES.fits(producer):
            self._batches = _OWN_BATCHES

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
        self, records: Iterable[OutgoingRecord]
    ) -> list[BaseException | None]:
        """Send records; per record, ``None`` once acknowledged or the error it failed with.

        Errors keep aiokafka's ``retriable`` flag (a broker that is down
        fails every record retriably; a record that is too large does not).
        """
        outcomes = await self._submit(records)
        settled: dict[int, BaseException | None] = {}
        results: list[BaseException | None] = []
        for topic, item in outcomes:
            if isinstance(item, BaseException):
                results.append(item)
                continue
            key = id(item)
            if key not in settled:
                settled[key] = await _settle(topic, item)
            results.append(settled[key])
        if any(isinstance(r, PublishError) and r.producer_state for r in results):
            await self._renew_producer()
        return results

    async def send_records(self, records: Iterable[OutgoingRecord]) -> None:
        """Send records as they are; all acknowledged, or ``PublishError``."""
        for error in await self.send_records_settled(records):
            if error is not None:
                raise error

    async def _submit(self, records: Iterable[OutgoingRecord]) -> list[tuple[str, Any]]:
        """Hand records to the producer in per-partition batches.

        Returns, per record in order, its topic and either the future of the
        batch it went out in or the error that kept it from being sent. A
        record refused before sending holds back the later records of its
        key, and a batch refused by the producer the later records of its
        partition, so no record overtakes an earlier one of the same key.
        """
        outcomes: list[tuple[str, Any]] = []
        try:
            producer = await self._current_producer()
        except KafkaError as exc:  # a producer to renew, and the broker still away
            for record in records:
                outcomes.append((record.topic, _publish_error(record.topic, exc)))
            return outcomes
        batches = self._batches
        if batches is None:
            return await self._submit_each(producer, records)
        partitions: dict[str, list[int] | PublishError] = {}
        open_batches: dict[tuple[str, int], tuple[Any, list[int], Append]] = {}
        stopped: dict[tuple[str, int], PublishError] = {}
        refused: set[tuple[str, bytes]] = set()
        pending_records: dict[int, tuple[OutgoingRecord, list[tuple[str, bytes]]]] = {}
        limit = self._options["max_request_size"]
        estimate = batches.estimate
        # Sizing a record costs ~0.5 µs; below half the limit only outsized
        # headers could make it too large, and then the broker refuses its batch.
        small = limit // 2

        async def flush(tp: tuple[str, int], batch: Any, members: list[int]) -> None:
            topic, partition = tp
            if len(members) < _OWN_BATCH_MIN:
                # A few records: through send(), so they share the producer's
                # lingering batch with other callers' records.
                for index in members:
                    if tp in stopped:
                        outcomes[index] = (topic, _held_back(topic, stopped[tp]))
                        continue
                    record, headers = pending_records.pop(index)
                    try:
                        item: Any = await producer.send(
                            topic, record.value, record.key, partition, None, headers
                        )
                    except KafkaError as exc:
                        item = stopped[tp] = _publish_error(topic, exc)
                    outcomes[index] = (topic, item)
                return
            for index in members:
                pending_records.pop(index, None)
            try:
                item = await batches.send(producer, batch, topic, partition)
            except KafkaError as exc:
                item = stopped[tp] = _publish_error(topic, exc)
            for index in members:
                outcomes[index] = (topic, item)

        for record in records:
            topic, key = record.topic, record.key
            known = partitions.get(topic)
            if known is None:
                known = partitions[topic] = await self._partitions(producer, topic)
            if isinstance(known, PublishError):
                outcomes.append((topic, known))
                continue
            if refused and key is not None and (topic, key) in refused:
                reason = "an earlier record of its key was refused"
                outcomes.append((topic, HeldBack(topic, reason)))
                continue
            headers = list(record.headers)  # aiokafka's record builder takes lists only
            value = record.value
            if len(value) > small and (size := estimate(key, value, headers)) > limit:
                if key is not None:
                    refused.add((topic, key))
                too_large = MessageSizeTooLargeError(
                    f"the record is {size} bytes, more than max_request_size ({limit})"
                )
                outcomes.append((topic, _publish_error(topic, too_large)))
                continue
            tp = (topic, partition_for(key, known))
            if stopped and tp in stopped:
                outcomes.append((topic, _held_back(topic, stopped[tp])))
                continue
            current = open_batches.get(tp)
            if current is None or (
                current[2](timestamp=None, key=key, value=value, headers=headers) is None
            ):
                if current is not None:  # full: send it, start the next one
                    batch, members, _ = current
                    del open_batches[tp]
                    await flush(tp, batch, members)
                    if tp in stopped:
                        outcomes.append((topic, _held_back(topic, stopped[tp])))
                        continue
                batch, append = batches.new(producer)
                append(timestamp=None, key=key, value=value, headers=headers)
                current = open_batches[tp] = (batch, [], append)
            members = current[1]
            if len(members) < _OWN_BATCH_MIN:
                pending_records[len(outcomes)] = (record, headers)
            members.append(len(outcomes))
            outcomes.append((topic, None))
        for tp, (batch, members, _) in open_batches.items():
            await flush(tp, batch, members)
        return outcomes

    async def _submit_each(
        self, producer: AIOKafkaProducer, records: Iterable[OutgoingRecord]
    ) -> list[tuple[str, Any]]:
        """The public path: every record through ``send()``, with the same order rules.

        A record too large holds back the later records of its key; any other
        refusal the later records of its partition.
        """
        outcomes: list[tuple[str, Any]] = []
        partitions: dict[str, list[int] | PublishError] = {}
        stopped: dict[tuple[str, int], PublishError] = {}
        refused: set[tuple[str, bytes]] = set()
        for record in records:
            topic, key = record.topic, record.key
            known = partitions.get(topic)
            if known is None:
                known = partitions[topic] = await self._partitions(producer, topic)
            if isinstance(known, PublishError):
                outcomes.append((topic, known))
                continue
            if refused and key is not None and (topic, key) in refused:
                reason = "an earlier record of its key was refused"
                outcomes.append((topic, HeldBack(topic, reason)))
                continue
            tp = (topic, partition_for(key, known))
            if stopped and tp in stopped:
                outcomes.append((topic, _held_back(topic, stopped[tp])))
                continue
            headers = list(record.headers)
            try:
                item: Any = await producer.send(topic, record.value, key, tp[1], None, headers)
            except MessageSizeTooLargeError as exc:
                if key is not None:
                    refused.add((topic, key))
                item = _publish_error(topic, exc)
            except KafkaError as exc:
                item = stopped[tp] = _publish_error(topic, exc)
            outcomes.append((topic, item))
        return outcomes

    @staticmethod
    async def _partitions(producer: AIOKafkaProducer, topic: str) -> list[int] | PublishError:
        try:
            return sorted(await producer.partitions_for(topic))
        except KafkaError as exc:
            return _publish_error(topic, exc)

    async def _renew_producer(self) -> None:
        """A new producer id after the broker lost our sequence state (restart mid-send).

        If the new producer cannot connect yet, the next send tries again:
        its records fail retriably meanwhile, as with the broker away.
        """
        log.warning("the broker rejected the producer's sequence state: starting a new producer")
        old, self._producer = self._producer, None
        if old is not None:
            with contextlib.suppress(Exception):
                await old.stop()
        with contextlib.suppress(KafkaError):
            await self._current_producer()

    async def _current_producer(self) -> AIOKafkaProducer:
        """The producer; after a renewal that could not connect, a new attempt."""
        if self._state != "started":
            raise LifecycleError("the publisher is not started")
        if self._producer is None:
            producer = AIOKafkaProducer(**self._options)
            try:
                await producer.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await producer.stop()
                raise
            if self._state != "started":  # stopped meanwhile
                await producer.stop()
                raise LifecycleError("the publisher is not started")
            self._producer = producer
        return self._producer


_OWN_BATCHES = own_batches()
"""aiokafka's private batch API, checked once at import (``None``: it changed)."""

_OWN_BATCH_MIN = 32
"""Fewer records than this for one partition in a call go through ``send()``
(and may share a lingering batch with concurrent callers); more are sent as a
batch of their own, without lingering and without a future per record."""


def _held_back(topic: str, cause: PublishError) -> HeldBack:
    return HeldBack(topic, f"an earlier batch of its partition was refused ({cause.reason})")


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
