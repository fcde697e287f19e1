"""CloudEvents binary content mode on Kafka records.

The record value is the serialized protobuf message and nothing else; the
event's attributes travel as headers (CloudEvents Kafka protocol binding,
binary mode)::

    ce_specversion  1.0
    ce_id           UUID, fixed once per event: the dedup key, stable across retries
    ce_source       the producing service
    ce_type         protobuf full name, e.g. shop.orders.v1.OrderPlaced
    ce_time         RFC 3339, UTC
    content-type    application/protobuf
    ce_dataschema   type.googleapis.com/<full name>
    ce_subject      optional
    traceparent / tracestate   optional, W3C trace context

Example::

    headers = attributes.headers()
    attributes = Attributes.from_headers(record.headers)   # MalformedEvent if broken
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Iterable

from .errors import WirebusError

__all__ = ["CONTENT_TYPE", "SPECVERSION", "Attributes", "MalformedEvent", "rfc3339"]

SPECVERSION = "1.0"
CONTENT_TYPE = "application/protobuf"
_B_SPECVERSION = SPECVERSION.encode()
_B_CONTENT_TYPE = CONTENT_TYPE.encode()


class MalformedEvent(WirebusError):
    """A record's CloudEvents headers are missing or malformed."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Attributes:
    """The CloudEvents attributes of one event."""

    id: str
    source: str
    type: str
    time: dt.datetime
    dataschema: str | None = None
    subject: str | None = None
    traceparent: str | None = None
    tracestate: str | None = None

    @classmethod
    def new(
        cls,
        *,
        source: str,
        type: str,
        dataschema: str | None = None,
        subject: str | None = None,
    ) -> Attributes:
        """Attributes of a freshly raised event: a new UUID and the current UTC time."""
        return cls(
            id=str(uuid.uuid4()),
            source=source,
            type=type,
            time=dt.datetime.now(dt.UTC),
            dataschema=dataschema,
            subject=subject,
        )

    def headers(self) -> list[tuple[str, bytes]]:
        """Kafka headers in binary content mode."""
        headers = [
            ("ce_specversion", _B_SPECVERSION),
            ("ce_id", self.id.encode()),
            ("ce_source", self.source.encode()),
            ("ce_type", self.type.encode()),
            ("ce_time", rfc3339(self.time).encode()),
            ("content-type", _B_CONTENT_TYPE),
        ]
        for name, value in (
            ("ce_dataschema", self.dataschema),
            ("ce_subject", self.subject),
            ("traceparent", self.traceparent),
            ("tracestate", self.tracestate),
        ):
            if value is not None:
                headers.append((name, value.encode()))
        return headers

    @classmethod
    def from_headers(cls, headers: Iterable[tuple[str, bytes | None]]) -> Attributes:
        """Read attributes from Kafka headers; raise :class:`MalformedEvent` if broken."""
        raw: dict[str, bytes] = {}
        for name, value in headers:
            if value is not None and name not in raw:
                raw[name] = value
        missing = [h for h in _REQUIRED if not raw.get(h)]
        if missing:
            raise MalformedEvent(f"missing CloudEvents header(s): {', '.join(missing)}")
        if raw["ce_specversion"] != _B_SPECVERSION:
            version = raw["ce_specversion"].decode(errors="replace")
            raise MalformedEvent(f"unsupported ce_specversion {version!r}")
        content_type = raw.get("content-type", _B_CONTENT_TYPE)
        if content_type != _B_CONTENT_TYPE and (
            content_type.split(b";")[0].strip() not in _CONTENT_TYPES
        ):
            shown = content_type.decode(errors="replace")
            raise MalformedEvent(f"content-type {shown!r} is not {CONTENT_TYPE}")
        text: dict[str, str] = {}
        for name, value in raw.items():
            if name in _TEXT:  # other headers (tracing, proxies) may be binary: not ours
                try:
                    text[name] = value.decode()
                except UnicodeDecodeError:
                    raise MalformedEvent(f"header {name} is not UTF-8") from None
        return cls(
            id=text["ce_id"],
            source=text["ce_source"],
            type=text["ce_type"],
            time=_parse_time(text["ce_time"]),
            dataschema=text.get("ce_dataschema"),
            subject=text.get("ce_subject"),
            traceparent=text.get("traceparent"),
            tracestate=text.get("tracestate"),
        )


_REQUIRED = ("ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time")
_TEXT = frozenset(
    ("ce_id", "ce_source", "ce_type", "ce_time", "ce_dataschema", "ce_subject", "traceparent",
     "tracestate")
)  # fmt: skip
_CONTENT_TYPES = (_B_CONTENT_TYPE, b"application/x-protobuf")


def rfc3339(value: dt.datetime) -> str:
    """``value`` as RFC 3339 in UTC with microseconds and a ``Z``."""
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _parse_time(raw: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(raw[:-1] + "+00:00" if raw[-1:] in "zZ" else raw)
    except ValueError:
        raise MalformedEvent(f"ce_time {raw!r} is not RFC 3339") from None
    if parsed.tzinfo is None:
        raise MalformedEvent(f"ce_time {raw!r} has no time zone")
    return parsed
