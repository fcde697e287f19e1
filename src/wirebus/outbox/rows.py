"""Outbox rows <-> records: what is stored is exactly what will be published."""

from __future__ import annotations

import datetime as dt
import json
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from ..broker import OutgoingRecord

__all__ = ["SHARDS", "records_from_rows", "row_from_record", "shard_of"]

SHARDS = 64
"""Rows are spread over this many shards by key; a relay leases whole shards."""


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
        "headers": json.dumps([[k, v.decode()] for k, v in record.headers]),
        "shard": shard_of(record.key, event_id),
        "status": "pending",
        "attempts": 0,
        "created_at": now,
        "available_at": now,
    }


def records_from_rows(rows: Sequence[Mapping[Any, Any]]) -> list[OutgoingRecord]:
    """The records of several rows (their headers decoded in one ``json.loads``)."""
    if not rows:
        return []
    headers = json.loads("[" + ",".join([row["headers"] for row in rows]) + "]")
    return [
        OutgoingRecord(
            row["topic"], row["key"], row["value"], tuple([(k, v.encode()) for k, v in pairs])
        )
        for row, pairs in zip(rows, headers, strict=True)
    ]
