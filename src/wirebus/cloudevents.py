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
from collections.abc import Callable, Iterable
from typing import Any

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
        if not isinstance(headers, tuple | list):
            headers = tuple(headers)
        fast = _from_wirebus_headers(headers)
        return fast if fast is not None else cls._from_any_headers(headers)

    @classmethod
    def _from_any_headers(cls, headers: Iterable[tuple[str, bytes | None]]) -> Attributes:
        """The general reader: first value of a header wins, every rule checked with its reason."""
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


def _from_wirebus_headers(headers: tuple[Any, ...] | list[Any]) -> Attributes | None:
    """The common case, read fast; ``None`` whenever the general reader must decide.

    Headers as every CloudEvents producer writes them: each once, all required
    ones present and non-empty, specversion 1.0, content-type absent or
    ``application/protobuf``, text in UTF-8. Values that repeat from record to
    record (source, type, dataschema, the time of a batch) are decoded once.
    """
    raw = dict(headers)
    if len(raw) != len(headers) or None in raw.values():
        return None
    get = raw.get
    ident, source, kind, time = get("ce_id"), get("ce_source"), get("ce_type"), get("ce_time")
    if (
        not (ident and source and kind and time)
        or get("ce_specversion") != _B_SPECVERSION
        or get("content-type", _B_CONTENT_TYPE) != _B_CONTENT_TYPE
    ):
        return None
    try:
        attributes = _new_attributes(Attributes)
        _set_id(attributes, ident.decode())
        _set_source(attributes, _text(source))
        _set_type(attributes, _text(kind))
        _set_time(attributes, _time(time))
        schema, subject = get("ce_dataschema"), get("ce_subject")
        parent, state = get("traceparent"), get("tracestate")
        _set_dataschema(attributes, None if schema is None else _text(schema))
        _set_subject(attributes, None if subject is None else subject.decode())
        _set_traceparent(attributes, None if parent is None else parent.decode())
        _set_tracestate(attributes, None if state is None else state.decode())
    except (UnicodeDecodeError, MalformedEvent):
        return None
    return attributes


def _text(value: bytes) -> str:
    text = _decoded.get(value)
    if text is None:
        if len(_decoded) >= 1024:
            _decoded.clear()
        text = _decoded[value] = value.decode()
    return text


def _time(value: bytes) -> dt.datetime:
    parsed = _last_time.get(value)
    if parsed is None:  # a publisher stamps a whole batch with one time: keep the last
        parsed = _parse_time(value.decode())
        _last_time.clear()
        _last_time[value] = parsed
    return parsed


_decoded: dict[bytes, str] = {}
_last_time: dict[bytes, dt.datetime] = {}
_new_attributes = object.__new__


def _slot_setter(name: str) -> Callable[[Attributes, Any], None]:
    setter: Callable[[Attributes, Any], None] = Attributes.__dict__[name].__set__
    return setter


# A frozen dataclass's slots, filled directly (its __init__ costs ~3x more).
_set_id = _slot_setter("id")
_set_source = _slot_setter("source")
_set_type = _slot_setter("type")
_set_time = _slot_setter("time")
_set_dataschema = _slot_setter("dataschema")
_set_subject = _slot_setter("subject")
_set_traceparent = _slot_setter("traceparent")
_set_tracestate = _slot_setter("tracestate")


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
