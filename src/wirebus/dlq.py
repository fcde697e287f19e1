"""Dead-letter replay: send records of ``<topic>.dlq`` back to their original topic.

A replayed record keeps its key, value and CloudEvents headers (so its
``ce_id`` is unchanged and the inbox still recognises it); the ``wirebus_*``
headers that said why it failed are dropped. Replay reads with its own
consumer group and commits as it goes, so a second replay continues where
the first stopped instead of sending the same records twice.

Example::

    replayed = await replay(port, publisher, limit=100)
"""

from __future__ import annotations

import logging
import time

from .broker import ConsumerPort, EventPublisher, OutgoingRecord, Record

__all__ = ["REPLAY_GROUP", "replay", "replay_record"]

log = logging.getLogger(__name__)

REPLAY_GROUP = "wirebus-dlq-replay"


def replay_record(record: Record) -> OutgoingRecord:
    """The record to send back: to ``wirebus_original_topic``, without ``wirebus_*`` headers."""
    original = record.header("wirebus_original_topic")
    # A record not written by wirebus has no such header: strip the suffix.
    topic = original.decode() if original else record.topic.removesuffix(".dlq")
    headers = tuple((k, v) for k, v in record.headers if not k.startswith("wirebus_"))
    return OutgoingRecord(topic=topic, key=record.key, value=record.value or b"", headers=headers)


async def replay(
    port: ConsumerPort,
    publisher: EventPublisher,
    *,
    limit: int | None = None,
    idle_seconds: float = 3.0,
) -> int:
    """Replay up to ``limit`` records (all when ``None``); stop once idle. Returns the count."""
    sent = 0
    await port.start()
    try:
        idle_since = time.monotonic()
        while limit is None or sent < limit:
            batch = await port.fetch(min(0.5, idle_seconds))
            if not batch:
                if time.monotonic() - idle_since > idle_seconds:
                    break
                continue
            idle_since = time.monotonic()
            offsets: dict[tuple[str, int], int] = {}
            for tp, records in batch.items():
                for record in records:
                    if limit is not None and sent >= limit:
                        await port.seek(tp, record.offset)
                        break
                    await publisher.send_records([replay_record(record)])
                    offsets[tp] = record.offset + 1
                    sent += 1
            await port.commit(offsets)
    finally:
        await port.stop()
    log.info("replayed %d dead-lettered record(s)", sent)
    return sent
