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

# Headers are stored as text: "\x1e" then names and values joined by "\x1f".
# CloudEvents attribute values cannot hold control characters, so they never
# contain the separator; a header that does (or any other oddity) is stored
# as JSON, as every row was before, and both forms are read.
_PACKED = "\x1e"
_SEP = "\x1f"


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
    fields = [text for name, value in headers for text in (name, value.decode())]
    packed = _SEP.join(fields)
    if packed.count(_SEP) == len(fields) - 1 or not fields:
        return _PACKED + packed
    return json.dumps([[name, value.decode()] for name, value in headers])


def unpack_headers(text: str) -> tuple[tuple[str, bytes], ...]:
    """The record headers stored by :func:`pack_headers` (or as JSON by older versions)."""
    if text[:1] == _PACKED:
        fields = iter(text[1:].split(_SEP))
        return tuple([(name, value.encode()) for name, value in zip(fields, fields, strict=False)])
    return tuple([(name, value.encode()) for name, value in json.loads(text)])


def records_from_rows(rows: Sequence[Sequence[Any]]) -> list[OutgoingRecord]:
    """The records of claimed rows (columns as in :data:`CLAIMED`)."""
    records: list[OutgoingRecord] = []
    append = records.append
    for row in rows:
        text = row[HEADERS]
        if text[:1] == _PACKED:  # inlined unpack_headers: this runs for every row relayed
            fields = iter(text[1:].split(_SEP))
            headers = tuple(
                [(name, value.encode()) for name, value in zip(fields, fields, strict=False)]
            )
        else:
            headers = unpack_headers(text)
        append(OutgoingRecord(row[TOPIC], row[KEY], row[VALUE], headers))
    return records
