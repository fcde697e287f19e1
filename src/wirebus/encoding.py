"""``EventEncoder``: events to records, apart from any broker that sends them.

A record is the event's protobuf bytes (nothing around them), its topic and
key from the registry, and the CloudEvents headers written by the encoder's
:class:`~wirebus.cloudevents.CloudEventsCodec`, followed by the context of
the work that emitted it: ``ce_correlationid``/``ce_causationid``
(``wirebus.correlation``) and, with tracing, the current span's
``traceparent``/``tracestate`` -- read once per batch of records.

Example::

    encoder = EventEncoder(app.registry(), source="shop")
    record = encoder.record(OrderPlaced(order_id="o-1", ...))
    records = encoder.records(events)          # one ce_time for the batch
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .broker import OutgoingRecord
from .cloudevents import Attributes, CloudEventsCodec, now_rfc3339
from .codec import EventRegistry, EventType
from .correlation import (
    CAUSATION_HEADER,
    CORRELATION_HEADER,
    correlation_headers,
    work_correlation_headers,
)
from .errors import ConfigurationError, UnknownEventType
from .event_ids import new_event_id

if TYPE_CHECKING:
    from .tracing import Tracing

Headers = tuple[tuple[str, bytes], ...]

__all__ = ["EventEncoder", "new_event_id", "now_rfc3339"]


class EventEncoder:
    """Turns events into records: protobuf bytes plus CloudEvents headers.

    ``codec`` defaults to a new :class:`CloudEventsCodec` for ``source``; it
    keeps the fixed headers per type and the pool of event ids. With
    ``tracing``, records carry the trace context current when they are
    encoded.

    Example::

        encoder = EventEncoder(registry, source="shop")
        record = encoder.record(event, subject="orders/o-1")
    """

    def __init__(
        self,
        registry: EventRegistry,
        *,
        source: str,
        codec: CloudEventsCodec | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        if codec is not None and codec.source != source:
            raise ConfigurationError(f"source={source!r} but the codec writes {codec.source!r}")
        self.codec = codec if codec is not None else CloudEventsCodec(source=source)
        self.registry = registry
        self.source = self.codec.source
        self._kinds: dict[type, EventType] = {}
        self._headers = self.codec.writer.headers
        self._ids = self.codec.ids
        self.tracing = tracing
        self._trace_headers = tracing.headers if tracing is not None else None

    def context_headers(self) -> Headers:
        """The headers of the current work: correlation, causation and (with tracing) trace.

        Read once and passed to :meth:`record` as ``context=`` for a batch.
        """
        trace = self._trace_headers
        if trace is None:
            return correlation_headers()
        return (*correlation_headers(), *trace())

    def _kind(self, event_type: type) -> EventType:
        kind = self.registry.by_type(event_type)
        if kind is None:
            raise UnknownEventType(
                f"{event_type.__qualname__} is not registered: add it to App(events=[...])"
                " or handle it somewhere in the app"
            )
        self._kinds[event_type] = kind
        return kind

    def record(
        self,
        event: Any,
        *,
        attributes: Attributes | None = None,
        subject: str | None = None,
        event_id: str | None = None,
        time: bytes | None = None,
        context: Headers | None = None,
    ) -> OutgoingRecord:
        """Encode ``event``: a fresh ``ce_id`` (or ``event_id``) unless ``attributes`` are given.

        ``context`` is :meth:`context_headers` (read now when not given;
        outside any call or consumed event, the event starts a chain of its
        own: its ``ce_id`` is its correlation and causation id).
        """
        kind = self._kinds.get(type(event)) or self._kind(type(event))
        if attributes is not None:
            headers = tuple(attributes.headers())
        else:
            if context is None:
                found = work_correlation_headers()
                if found is None:  # outside any work: the event's own id names its chain
                    event_id = event_id or self._ids.next()
                    own = event_id.encode()
                    found = ((CORRELATION_HEADER, own), (CAUSATION_HEADER, own))
                trace = self._trace_headers
                context = found if trace is None else (*found, *trace())
            headers = self._headers(
                kind, event_id=event_id, time=time, subject=subject, extra=context
            )
        return OutgoingRecord(kind.topic, kind.key_bytes(event), kind.encode(event), headers)

    def records(self, events: Iterable[Any]) -> list[OutgoingRecord]:
        """Encode several events (one timestamp for the batch)."""
        return list(self.iter_records(events))

    def iter_records(self, events: Iterable[Any]) -> Iterator[OutgoingRecord]:
        """Encode several events lazily, so a publisher can send while encoding."""
        time = now_rfc3339()
        context = self.context_headers()
        for event in events:
            yield self.record(event, time=time, context=context)
