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
# reading a row allocates only what is new in it. Headers known to change
# with every event are not kept; the cache stops growing at _CACHE_MAX.
_RS = "\x1e"
_US = "\x1f"
_UNIQUE = frozenset({"ce_id", "ce_time", "traceparent", "tracestate"})
_CACHE_MAX = 4096
_pairs: dict[str, tuple[str, bytes]] = {}


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
    cached = _pairs.get
    return tuple([cached(field) or _pair(field) for field in text[1:].split(_RS)])


def _pair(field: str) -> tuple[str, bytes]:
    name, _, value = field.partition(_US)
    pair = (name, value.encode())
    if name not in _UNIQUE and len(_pairs) < _CACHE_MAX:
        _pairs[field] = pair
    return pair


def records_from_rows(rows: Sequence[Sequence[Any]]) -> list[OutgoingRecord]:
    """The records of claimed rows (columns as in :data:`CLAIMED`)."""
    records: list[OutgoingRecord] = []
    append = records.append
    cached = _pairs.get
    for row in rows:
        text = row[HEADERS]
        if text[:1] == _RS and len(text) > 1:  # unpack_headers inlined: runs for every row
            headers = tuple([cached(field) or _pair(field) for field in text[1:].split(_RS)])
        else:
            headers = unpack_headers(text)
        append(OutgoingRecord(row[TOPIC], row[KEY], row[VALUE], headers))
    return records
