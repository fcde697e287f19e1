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
    ce_correlationid / ce_causationid   extensions: the call the work started from, and
                    the message that caused this event (``wirebus.correlation``)
    traceparent / tracestate   optional, W3C trace context

One :class:`CloudEventsCodec` per producing service owns everything that is
decided once: its writer keeps the fixed headers of each event type and the
id pool, its reader the fast path and the values it decoded already. No state
lives at module level.

Example::

    codec = CloudEventsCodec(source="shop")
    headers = codec.writer.headers(kind)                  # kind: a registered EventType
    attributes = codec.reader.read(record.headers)        # MalformedEvent if broken
    attributes = Attributes.from_headers(record.headers)  # the same, without caches
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError, MalformedEvent
from .event_ids import EventIds

if TYPE_CHECKING:
    from .codec import EventType

__all__ = [
    "CONTENT_TYPE",
    "SPECVERSION",
    "Attributes",
    "CloudEventsCodec",
    "CloudEventsReader",
    "CloudEventsWriter",
    "Headers",
    "MalformedEvent",
    "now_rfc3339",
    "rfc3339",
]

SPECVERSION = "1.0"
CONTENT_TYPE = "application/protobuf"
_B_SPECVERSION = SPECVERSION.encode()
_B_CONTENT_TYPE = CONTENT_TYPE.encode()

Headers = tuple[tuple[str, bytes], ...]


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
    correlationid: str | None = None
    """Extension: the id of the call (or first event) this event's chain of work started from."""
    causationid: str | None = None
    """Extension: the id of the message (call or event) that caused this event."""

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
            ("ce_correlationid", self.correlationid),
            ("ce_causationid", self.causationid),
            ("traceparent", self.traceparent),
            ("tracestate", self.tracestate),
        ):
            if value is not None:
                headers.append((name, value.encode()))
        return headers

    @classmethod
    def from_headers(cls, headers: Iterable[tuple[str, bytes | None]]) -> Attributes:
        """Read attributes from Kafka headers; raise :class:`MalformedEvent` if broken.

        The same reader as :meth:`CloudEventsReader.read`, without its caches
        (a codec's reader decodes repeated values once).
        """
        return _UNCACHED.read(headers)


_REQUIRED = ("ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time")
_TEXT = frozenset(
    ("ce_id", "ce_source", "ce_type", "ce_time", "ce_dataschema", "ce_subject", "traceparent",
     "tracestate", "ce_correlationid", "ce_causationid")
)  # fmt: skip
_CONTENT_TYPES = (_B_CONTENT_TYPE, b"application/x-protobuf")
_OPTIONAL_TEXT = ("ce_subject", "traceparent", "tracestate", "ce_correlationid", "ce_causationid")


class CloudEventsWriter:
    """Writes the CloudEvents headers of events of one source.

    The headers every event of a type shares (specversion, source, type,
    content-type, dataschema) are encoded once per type; per event only the
    id, and per batch the time, are new.

    Example::

        writer = CloudEventsWriter(source="shop", ids=EventIds())
        headers = writer.headers(kind, time=now_rfc3339(), subject="orders/o-1")
    """

    def __init__(self, *, source: str, ids: EventIds) -> None:
        if not source:
            raise ConfigurationError("source= (the producing service's name) must not be empty")
        self.source = source
        self.ids = ids
        self._fixed: dict[str, tuple[Headers, Headers]] = {}

    def headers(
        self,
        kind: EventType,
        *,
        event_id: str | None = None,
        time: bytes | None = None,
        subject: str | None = None,
        extra: Headers = (),
    ) -> Headers:
        """Headers of one event of ``kind``: a new ``ce_id`` (or ``event_id``), ``time`` or now."""
        fixed = self._fixed.get(kind.full_name)
        if fixed is None:
            fixed = self._fix(kind)
        before, after = fixed
        headers = (
            *before,
            ("ce_id", (event_id or self.ids.next()).encode()),
            ("ce_time", time or now_rfc3339()),
            *after,
            *extra,
        )
        if subject is not None:
            headers = (*headers, ("ce_subject", subject.encode()))
        return headers

    def _fix(self, kind: EventType) -> tuple[Headers, Headers]:
        before = (("ce_specversion", _B_SPECVERSION),)
        after = (
            ("ce_source", self.source.encode()),
            ("ce_type", kind.full_name.encode()),
            ("content-type", _B_CONTENT_TYPE),
            ("ce_dataschema", kind.dataschema.encode()),
        )
        self._fixed[kind.full_name] = fixed = (before, after)
        return fixed


class CloudEventsReader:
    """Reads CloudEvents attributes from Kafka headers; :class:`MalformedEvent` if broken.

    ``read`` takes a fast path for headers as every CloudEvents producer
    writes them and leaves anything unusual to ``read_general``, which checks
    every rule and says what is wrong. With ``cache=True`` values that repeat
    from record to record (source, type, dataschema, a batch's time) are
    decoded once per reader.

    Example::

        reader = CloudEventsReader()
        attributes = reader.read(record.headers)
    """

    def __init__(self, *, cache: bool = True) -> None:
        self._cache = cache
        self._decoded: dict[bytes, str] = {}
        self._last_time: dict[bytes, dt.datetime] = {}
        self._time_ok: bytes | None = None
        self._text: Callable[[bytes], str] = self._cached_text if cache else bytes.decode
        self._time: Callable[[bytes], dt.datetime] = (
            self._cached_time if cache else _parse_time_bytes
        )

    def read(self, headers: Iterable[tuple[str, bytes | None]]) -> Attributes:
        """The attributes in ``headers`` (the first value of a repeated header wins)."""
        if not isinstance(headers, tuple | list):
            headers = tuple(headers)
        fast = self._read_fast(headers)
        return fast if fast is not None else self.read_general(headers)

    def read_route(self, headers: Iterable[tuple[str, bytes | None]]) -> tuple[str, str]:
        """``(ce_id, ce_type)`` of ``headers``, after every check :meth:`read` makes.

        The consumer's hot path: it routes and deduplicates by these two and
        needs no :class:`Attributes`. Headers that :meth:`read` would refuse
        raise the same :class:`MalformedEvent`; unusual ones (a repeated
        header, a content-type with parameters) go to :meth:`read_general`.

        Example::

            event_id, event_type = reader.read_route(record.headers)
        """
        if type(headers) is not tuple and type(headers) is not list:
            headers = tuple(headers)
        raw = dict(headers)
        get = raw.get
        ident, kind, time = get("ce_id"), get("ce_type"), get("ce_time")
        source = get("ce_source")
        if (
            len(raw) == len(headers)
            and ident
            and kind
            and time
            and source
            and get("ce_specversion") == _B_SPECVERSION
            and get("content-type", _B_CONTENT_TYPE) == _B_CONTENT_TYPE
            and None not in raw.values()
        ):
            try:
                return self._route(raw, ident, kind, time, source)
            except (UnicodeDecodeError, MalformedEvent):
                pass
        attributes = self.read_general(headers)
        return attributes.id, attributes.type

    def _route(
        self, raw: dict[str, bytes], ident: bytes, kind: bytes, time: bytes, source: bytes
    ) -> tuple[str, str]:
        """The UTF-8 and time checks of :meth:`read_route`: values seen before are known good."""
        known = self._decoded
        type_text = known.get(kind)
        if type_text is None:
            type_text = self._text(kind)
        if source not in known:
            self._text(source)
        if time != self._time_ok:
            self._time(time)
            self._time_ok = time if self._cache else None
        schema = raw.get("ce_dataschema")
        if schema is not None and schema not in known:
            self._text(schema)
        # Beyond the 5 required headers, content-type and dataschema: check the text of the rest.
        if len(raw) > 5 + ("content-type" in raw) + (schema is not None):
            for name in _OPTIONAL_TEXT:
                value = raw.get(name)
                if value is not None:
                    value.decode()
        return ident.decode(), type_text

    @staticmethod
    def read_general(headers: Iterable[tuple[str, bytes | None]]) -> Attributes:
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
        return Attributes(
            id=text["ce_id"],
            source=text["ce_source"],
            type=text["ce_type"],
            time=_parse_time(text["ce_time"]),
            dataschema=text.get("ce_dataschema"),
            subject=text.get("ce_subject"),
            traceparent=text.get("traceparent"),
            tracestate=text.get("tracestate"),
            correlationid=text.get("ce_correlationid"),
            causationid=text.get("ce_causationid"),
        )

    def _read_fast(self, headers: tuple[Any, ...] | list[Any]) -> Attributes | None:
        """The common case, read fast; ``None`` whenever the general reader must decide.

        Headers as every CloudEvents producer writes them: each once, all
        required ones present and non-empty, specversion 1.0, content-type
        absent or ``application/protobuf``, text in UTF-8.
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
        text = self._text
        try:
            attributes = _new_attributes(Attributes)
            _set_id(attributes, ident.decode())
            _set_source(attributes, text(source))
            _set_type(attributes, text(kind))
            _set_time(attributes, self._time(time))
            schema, subject = get("ce_dataschema"), get("ce_subject")
            parent, state = get("traceparent"), get("tracestate")
            _set_dataschema(attributes, None if schema is None else text(schema))
            _set_subject(attributes, None if subject is None else subject.decode())
            _set_traceparent(attributes, None if parent is None else parent.decode())
            _set_tracestate(attributes, None if state is None else state.decode())
            correlation, causation = get("ce_correlationid"), get("ce_causationid")
            _set_correlationid(attributes, None if correlation is None else correlation.decode())
            _set_causationid(attributes, None if causation is None else causation.decode())
        except (UnicodeDecodeError, MalformedEvent):
            return None
        return attributes

    def _cached_text(self, value: bytes) -> str:
        text = self._decoded.get(value)
        if text is None:
            if len(self._decoded) >= 1024:
                self._decoded.clear()
            text = self._decoded[value] = value.decode()
        return text

    def _cached_time(self, value: bytes) -> dt.datetime:
        parsed = self._last_time.get(value)
        if parsed is None:  # a publisher stamps a whole batch with one time: keep the last
            parsed = _parse_time_bytes(value)
            self._last_time.clear()
            self._last_time[value] = parsed
        return parsed


class CloudEventsCodec:
    """The CloudEvents codec of one producing service: one writer, one reader, one id pool.

    Example::

        codec = CloudEventsCodec(source="shop")
        headers = codec.writer.headers(kind)
        assert codec.reader.read(headers).source == "shop"
    """

    def __init__(self, *, source: str) -> None:
        self.ids = EventIds()
        self.writer = CloudEventsWriter(source=source, ids=self.ids)
        self.reader = CloudEventsReader()

    @property
    def source(self) -> str:
        """The producing service, ``ce_source`` of every event written."""
        return self.writer.source


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
_set_correlationid = _slot_setter("correlationid")
_set_causationid = _slot_setter("causationid")


def now_rfc3339() -> bytes:
    """The current UTC time as RFC 3339 bytes, for ``ce_time``.

    Example::

        now_rfc3339()   # b"2024-05-06T07:08:09.123456Z"
    """
    return rfc3339(dt.datetime.now(dt.UTC)).encode()


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


def _parse_time_bytes(raw: bytes) -> dt.datetime:
    return _parse_time(raw.decode())


_UNCACHED = CloudEventsReader(cache=False)
"""``Attributes.from_headers``' reader: it holds no state (its caches are never used)."""
