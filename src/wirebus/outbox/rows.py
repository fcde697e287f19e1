"""Outbox rows <-> records: what is stored is exactly what will be published."""

from __future__ import annotations

import datetime as dt
import json
import zlib
from collections.abc import Sequence
from typing import Any

from ..broker import OutgoingRecord

__all__ = [
    "CLAIMED",
    "SHARDS",
    "HeaderReader",
    "pack_headers",
    "records_from_rows",
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
# relay keeps one). Headers known to change with every event are not kept,
# and the cache stops growing at its limit.
_RS = "\x1e"
_US = "\x1f"
_UNIQUE = frozenset({"ce_id", "ce_time", "traceparent", "tracestate"})


def shard_of(key: bytes | None, event_id: str) -> int:
    """One key's rows share a shard (so one relay keeps their order)."""
    return zlib.crc32(key if key is not None else event_id.encode()) % SHARDS


def row_from_record(record: OutgoingRecord, now: dt.datetime) -> dict[str, Any]:
    """The ``wirebus_outbox`` row of a record encoded at commit time."""
    headers = dict(record.headers)
    event_id = headers["ce_id"].decode()
    return {
        "event_id": event_id,
        "topic": record.topic,
        "key": record.key,
        "value": record.value,
        "headers": pack_headers(record.headers),
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
