"""Dead-letter records: their size bound, and replay back to the original topic.

A dead letter must always leave its partition, so it must always fit the
DLQ producer's ``max_request_size``. :func:`fit_dead_letter` keeps a record
that fits whole; one that does not keeps the ``wirebus_*`` reasons, the
original headers that fit (CloudEvents ones first in practice: they come
first and are small), the key (cut to an eighth of the limit) and as much
of the value as fits, and says so in headers::

    wirebus_truncated          what was cut: "value", "value,headers", "value,headers,key"
    wirebus_original_size      the original value's length in bytes
    wirebus_original_sha256    hex SHA-256 of the original value
    wirebus_dropped_headers    names of the original headers left out (if any)
    wirebus_original_key_size  the original key's length (if it was cut)

Replay leaves such a record where it is: its value is not the event any more.

A replayed record keeps its key, value and CloudEvents headers (so its
``ce_id`` is unchanged and the inbox still recognises it); the ``wirebus_*``
headers that said why it failed are dropped. Replay reads with its own
consumer group and commits as it goes, so a second replay continues where
the first stopped instead of sending the same records twice.

Example::

    replayed = await replay(port, publisher, limit=100)
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable

from .broker import ConsumerPort, EventPublisher, OutgoingRecord, Record

__all__ = [
    "MIN_DEAD_LETTER_BYTES",
    "REPLAY_GROUP",
    "TRUNCATED",
    "fit_dead_letter",
    "record_size",
    "replay",
    "replay_record",
]

log = logging.getLogger(__name__)

REPLAY_GROUP = "wirebus-dlq-replay"
TRUNCATED = "wirebus_truncated"
"""The header a dead letter cut to fit carries (its value says what was cut)."""
MIN_DEAD_LETTER_BYTES = 16 * 1024
"""The smallest size limit a dead letter can be fitted to (its reasons need room)."""

# A record batch of one record: the batch header (61 bytes) and the record's
# own varints (at most 36 bytes), then ~10 bytes of varints per header.
_RECORD_OVERHEAD = 128
_HEADER_OVERHEAD = 10


def record_size(key: bytes | None, value: bytes, headers: Iterable[tuple[str, bytes]]) -> int:
    """An upper bound of the bytes Kafka counts for a record sent alone.

    Example::

        assert record_size(b"k", b"v", [("ce_id", b"1")]) < 200
    """
    size = _RECORD_OVERHEAD + len(key or b"") + len(value)
    for name, header in headers:
        size += _HEADER_OVERHEAD + len(name.encode()) + len(header)
    return size


def fit_dead_letter(dead: OutgoingRecord, max_bytes: int) -> OutgoingRecord:
    """``dead`` itself if it fits ``max_bytes``, else a copy cut to fit (module docstring).

    The reasons (``wirebus_*`` headers) are always kept whole; ``max_bytes``
    must be at least :data:`MIN_DEAD_LETTER_BYTES`.

    Example::

        out = fit_dead_letter(dead_letter, 1024 * 1024)
        if out is not dead_letter:
            ...  # cut: out.header says what, the original size and sha256
    """
    if record_size(dead.key, dead.value, dead.headers) <= max_bytes:
        return dead
    value = dead.value
    cut = ["value"]
    reasons = [(k, v) for k, v in dead.headers if k.startswith("wirebus_")]
    kept: list[tuple[str, bytes]] = []
    dropped: list[str] = []
    room = max_bytes // 4
    for name, header in dead.headers:
        if name.startswith("wirebus_"):
            continue
        size = _HEADER_OVERHEAD + len(name.encode()) + len(header)
        if size <= room:
            kept.append((name, header))
            room -= size
        else:
            dropped.append(name)
    extra = [
        ("wirebus_original_size", str(len(value)).encode()),
        ("wirebus_original_sha256", hashlib.sha256(value).hexdigest().encode()),
    ]
    if dropped:
        cut.append("headers")
        extra.append(("wirebus_dropped_headers", ",".join(dropped)[:1000].encode()))
    key = dead.key
    if key is not None and len(key) > max_bytes // 8:
        cut.append("key")
        extra.append(("wirebus_original_key_size", str(len(key)).encode()))
        key = key[: max_bytes // 8]
    headers = (*kept, *reasons, (TRUNCATED, ",".join(cut).encode()), *extra)
    room = max(0, max_bytes - record_size(key, b"", headers))
    return OutgoingRecord(dead.topic, key, value[:room], headers)


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
                    if record.header(TRUNCATED) is not None:
                        log.warning(
                            "not replaying %s[%d]@%d: it was cut to fit the DLQ (%s)",
                            record.topic, record.partition, record.offset,
                            record.header(TRUNCATED),
                        )  # fmt: skip
                        offsets[tp] = record.offset + 1
                        continue
                    await publisher.send_records([replay_record(record)])
                    offsets[tp] = record.offset + 1
                    sent += 1
            await port.commit(offsets)
    finally:
        await port.stop()
    log.info("replayed %d dead-lettered record(s)", sent)
    return sent
