"""Outbox rows <-> records: what is stored is exactly what will be published.

A record is sized as Kafka's producer sizes it (:func:`record_size`); one
larger than the producer can send is refused when its row is built
(:class:`~wirebus.errors.EventTooLarge`), inside the unit of work, so the
call that emitted it fails with nothing persisted instead of leaving a row
that every publish attempt would fail.
"""

from __future__ import annotations

import datetime as dt
import json
import zlib
from collections.abc import Sequence
from typing import Any

from ..broker import OutgoingRecord
from ..errors import EventTooLarge

__all__ = [
    "CLAIMED",
    "MAX_RECORD_BYTES",
    "SHARDS",
    "HeaderReader",
    "pack_headers",
    "record_size",
    "records_from_rows",
    "refuse_oversized",
    "row_from_record",
    "shard_of",
    "unpack_headers",
]

SHARDS = 64
"""Rows are spread over this many shards by key; a relay leases whole shards."""

CLAIMED = ("id", "event_id", "topic", "key", "value", "headers", "attempts")
"""The columns a relay's claim returns, in this order (rows are read by position)."""
ID, EVENT_ID, TOPIC, KEY, VALUE, HEADERS, ATTEMPTS = range(len(CLAIMED))

# Headers are stored as text: each header "name\x1fvalue", each preceded by
# "\x1e". CloudEvents attribute values cannot hold control characters, so
# they never contain a separator; a header that does (or any other oddity) is
# stored as JSON, as every row was before, and both forms are read.
#
# Most headers repeat from row to row (ce_type, ce_source, content-type, ...):
# their (name, value) pairs are kept once, keyed by their stored text, so
# reading a row allocates only what is new in it (a HeaderReader's state: a
# relay keeps one). Headers known to change with every event or call (ids,
# time, trace context, correlation and causation ids) are not kept,
# and the cache stops growing at its limit.
_RS = "\x1e"
_US = "\x1f"
_UNIQUE = frozenset(
    {"ce_id", "ce_time", "traceparent", "tracestate", "ce_correlationid", "ce_causationid"}
)


def shard_of(key: bytes | None, event_id: str) -> int:
    """One key's rows share a shard (so one relay keeps their order)."""
    return zlib.crc32(key if key is not None else event_id.encode()) % SHARDS


MAX_RECORD_BYTES = 1024 * 1024
"""The largest record the producer sends: Kafka's ``max.request.size`` default (1 MiB).

The Kafka publisher's ``max_batch_bytes`` (its ``max_request_size``) and the
in-memory broker default to it, so an event refused here is one the
production producer would refuse too.
"""

# aiokafka's DefaultRecordBatchBuilder: a batch header, and the most a
# record's own attributes, timestamp and offset deltas and length can take.
_BATCH_HEADER = 61
_MAX_RECORD_OVERHEAD = 21


def _varint_size(value: int) -> int:
    """Bytes of a zigzag varint of ``value >= 0`` (as Kafka writes lengths)."""
    return max(1, ((value << 1).bit_length() + 6) // 7)


def record_size(
    key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]
) -> int:
    """The size the Kafka producer counts for one record, batch header included.

    The same upper bound aiokafka's producer compares with its
    ``max_request_size`` (``DefaultRecordBatchBuilder.estimate_size_in_bytes``).

    Example::

        record_size(b"o-1", event_bytes, [("ce_type", b"shop.orders.v1.OrderPlaced")])
    """
    size = _BATCH_HEADER + _MAX_RECORD_OVERHEAD
    size += 1 if key is None else _varint_size(len(key)) + len(key)
    size += 1 if value is None else _varint_size(len(value)) + len(value)  # None: a tombstone
    size += _varint_size(len(headers))
    for name, data in headers:
        name_size = len(name.encode())
        size += _varint_size(name_size) + name_size
        size += 1 if data is None else _varint_size(len(data)) + len(data)  # None: no value
    return size


def refuse_oversized(record: OutgoingRecord, limit: int = MAX_RECORD_BYTES) -> None:
    """Raise :class:`~wirebus.errors.EventTooLarge` if ``record`` is over ``limit`` bytes.

    Example::

        refuse_oversized(encoder.record(event))     # before it is stored or sent
    """
    size = record_size(record.key, record.value, record.headers)
    if size <= limit:
        return
    event_type = dict(record.headers).get("ce_type", b"?").decode()
    raise EventTooLarge(
        f"{event_type} encodes to a {size}-byte record, more than the {limit} bytes the"
        f" producer can send to {record.topic!r}: make the event smaller (or carry a"
        " reference to the data instead of the data)",
        metadata={"event_type": event_type, "record_bytes": str(size), "limit_bytes": str(limit)},
    )


def row_from_record(
    record: OutgoingRecord, now: dt.datetime, *, max_bytes: int = MAX_RECORD_BYTES
) -> dict[str, Any]:
    """The ``wirebus_outbox`` row of a record encoded at commit time.

    Raises :class:`~wirebus.errors.EventTooLarge` for a record larger than
    ``max_bytes``, which no publish attempt could ever send.
    """
    headers = dict(record.headers)
    event_id = headers["ce_id"].decode()
    packed = pack_headers(record.headers)
    key, value = record.key, record.value
    # Sizing exactly costs a pass over the headers; this bound (each stored
    # header character is at most 9 record bytes: UTF-8 plus two varints per
    # header of at least two characters) decides almost every record without it.
    bound = len(value) + (len(key) if key is not None else 0) + 9 * len(packed) + 100
    if bound > max_bytes:
        refuse_oversized(record, max_bytes)
    return {
        "event_id": event_id,
        "topic": record.topic,
        "key": key,
        "value": value,
        "headers": packed,
        "shard": shard_of(record.key, event_id),
        "status": "pending",
        "attempts": 0,
        "created_at": now,
        "available_at": now,
    }


def pack_headers(headers: Sequence[tuple[str, bytes]]) -> str:
    """The ``headers`` column of a record's headers (values must be UTF-8)."""
    fields = [f"{name}{_US}{value.decode()}" for name, value in headers]
    packed = _RS + _RS.join(fields)
    if packed.count(_RS) == max(1, len(fields)) and packed.count(_US) == len(fields):
        return packed
    return json.dumps([[name, value.decode()] for name, value in headers])


def unpack_headers(text: str) -> tuple[tuple[str, bytes], ...]:
    """The record headers stored by :func:`pack_headers` (or as JSON by older versions)."""
    if text[:1] != _RS:
        return tuple([(name, value.encode()) for name, value in json.loads(text)])
    if len(text) == 1:
        return ()
    return tuple([_split(field) for field in text[1:].split(_RS)])


def _split(field: str) -> tuple[str, bytes]:
    name, _, value = field.partition(_US)
    return name, value.encode()


class HeaderReader:
    """Reads stored headers back, keeping each repeated (name, value) pair once.

    ``limit`` bounds the pairs kept (headers unique to an event, such as an
    unknown per-event extension, would otherwise grow it without end).

    Example::

        reader = HeaderReader()
        records = reader.records(rows)       # rows as a claim returns them
    """

    def __init__(self, *, limit: int = 4096) -> None:
        self.limit = limit
        self._pairs: dict[str, tuple[str, bytes]] = {}

    @property
    def size(self) -> int:
        """How many pairs are kept."""
        return len(self._pairs)

    def headers(self, text: str) -> tuple[tuple[str, bytes], ...]:
        """The headers of one stored row (like :func:`unpack_headers`, sharing pairs)."""
        if text[:1] != _RS or len(text) == 1:
            return unpack_headers(text)
        cached = self._pairs.get
        return tuple([cached(field) or self._pair(field) for field in text[1:].split(_RS)])

    def _pair(self, field: str) -> tuple[str, bytes]:
        pair = _split(field)
        if pair[0] not in _UNIQUE and len(self._pairs) < self.limit:
            self._pairs[field] = pair
        return pair

    def records(self, rows: Sequence[Sequence[Any]]) -> list[OutgoingRecord]:
        """The records of claimed rows (columns as in :data:`CLAIMED`)."""
        records: list[OutgoingRecord] = []
        append = records.append
        cached = self._pairs.get
        pair = self._pair
        for row in rows:
            text = row[HEADERS]
            if text[:1] == _RS and len(text) > 1:  # headers() inlined: runs for every row
                headers = tuple([cached(field) or pair(field) for field in text[1:].split(_RS)])
            else:
                headers = unpack_headers(text)
            append(OutgoingRecord(row[TOPIC], row[KEY], row[VALUE], headers))
        return records


def records_from_rows(rows: Sequence[Sequence[Any]]) -> list[OutgoingRecord]:
    """The records of claimed rows, read without sharing (a relay uses a HeaderReader)."""
    return HeaderReader(limit=0).records(rows)
