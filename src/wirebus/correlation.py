"""Correlation and causation ids: which call a piece of work belongs to, and what caused it.

Every event wirebus encodes carries two CloudEvents extension attributes
(binary mode: Kafka headers)::

    ce_correlationid   the id of the call (or first event) the whole chain of work started from
    ce_causationid     the id of the message that caused this event

- A gRPC call's correlation id is its ``x-correlation-id`` metadata, or a new
  one (32 hex digits) when the client sent none (or an unusable one). The
  *causation* id of an event emitted by a call is the call's correlation id:
  the call has no id of its own, and the correlation id names it.
- An event handler run by a consumer inherits the consumed event's
  correlation id (``ce_correlationid``; a producer that sent none started
  the chain: its ``ce_id``), and the events it emits get the consumed
  event's ``ce_id`` as their causation id.

:class:`CorrelationStage` binds a call's :class:`Correlation` (outermost in
the pipeline); a consumer binds one per record with :func:`bind_correlation`.
Handlers and behaviours read it with :func:`current_correlation`.
A transport call's binding lasts for the rest of the call's task, so the
in-process handlers of the events it emits share it; an in-process
``mediator.send`` made outside any call gets one for its own pipeline only
(bind one with :func:`bind_correlation` to share it across several sends).

Logs: :class:`CorrelationFilter` adds ``correlation_id`` (``-`` outside any
call) to every record a handler passes, so a format can show it::

    handler = logging.StreamHandler()
    handler.addFilter(CorrelationFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s [%(correlation_id)s] %(message)s"))

Example (in a handler)::

    correlation = current_correlation()
    log.info("placing order for %s", correlation.correlation_id if correlation else "-")
"""

from __future__ import annotations

import contextvars
import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

from .context import CallInfo, current_call, current_call_binding, in_transport_call
from .pipeline import CallNext

__all__ = [
    "CAUSATION_HEADER",
    "CORRELATION_HEADER",
    "CORRELATION_METADATA",
    "CURRENT_CORRELATION",
    "Correlation",
    "CorrelationFilter",
    "CorrelationStage",
    "bind_correlation",
    "current_correlation",
    "unbind_correlation",
    "work_correlation_headers",
]

CORRELATION_HEADER = "ce_correlationid"
CAUSATION_HEADER = "ce_causationid"
CORRELATION_METADATA = "x-correlation-id"
_MAX_ID_CHARS = 128


class Correlation:
    """The correlation and causation ids of the work being done, with their headers encoded once.

    Example::

        correlation = Correlation("3f2a...", causation_id="8c4a7c1e-...")
        correlation.headers   # (("ce_correlationid", b"3f2a..."), ("ce_causationid", b"8c4a..."))
    """

    __slots__ = ("causation_id", "correlation_id", "headers", "owner")

    def __init__(
        self, correlation_id: str, *, causation_id: str | None = None, owner: object = None
    ) -> None:
        self.correlation_id = correlation_id
        self.owner = owner
        """The transport call binding this was made for (``None``: bound explicitly)."""
        self.causation_id = causation_id if causation_id is not None else correlation_id
        self.headers: tuple[tuple[str, bytes], ...] = (
            (CORRELATION_HEADER, correlation_id.encode()),
            (CAUSATION_HEADER, self.causation_id.encode()),
        )

    def __repr__(self) -> str:
        return f"Correlation({self.correlation_id!r}, causation_id={self.causation_id!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Correlation)
            and other.correlation_id == self.correlation_id
            and other.causation_id == self.causation_id
        )

    def __hash__(self) -> int:
        return hash((self.correlation_id, self.causation_id))

    @classmethod
    def new(cls) -> Correlation:
        """A new correlation id (32 hex digits), its own cause."""
        return cls(os.urandom(16).hex())

    @classmethod
    def of_call(cls, call: CallInfo, *, owner: object = None) -> Correlation:
        """The call's ``x-correlation-id`` metadata, or a new id if it has none usable."""
        given = call.metadata.get(CORRELATION_METADATA)
        if isinstance(given, bytes):
            given = given.decode(errors="replace")
        if given and len(given) <= _MAX_ID_CHARS and given.isprintable():
            return cls(given, owner=owner)
        return cls(os.urandom(16).hex(), owner=owner)

    @classmethod
    def of_event(cls, headers: Iterable[tuple[str, bytes | None]]) -> Correlation:
        """The correlation of work caused by the consumed event with these record headers.

        It inherits the event's ``ce_correlationid`` (its own ``ce_id`` if it
        has none: it started the chain); the cause is the event, ``ce_id``.
        """
        found: dict[str, bytes] = {}
        for name, value in headers:
            if value is not None and name not in found:
                found[name] = value
        event_id = found.get("ce_id", b"").decode(errors="replace")
        correlation = found.get(CORRELATION_HEADER)
        text = correlation.decode(errors="replace") if correlation else event_id
        return cls(text or os.urandom(16).hex(), causation_id=event_id or None)


CURRENT_CORRELATION: contextvars.ContextVar[Correlation | None] = contextvars.ContextVar(
    "wirebus_correlation", default=None
)
"""The correlation of the work being done: set through :func:`bind_correlation`
(or directly by the tracing stages, on their hot path); read it with
:func:`current_correlation`."""

CorrelationToken = contextvars.Token[Correlation | None]


def bind_correlation(correlation: Correlation) -> CorrelationToken:
    """Make ``correlation`` current for everything run from here; undo with the token.

    Example (a consumer, per record)::

        token = bind_correlation(Correlation.of_event(record.headers))
        try:
            await run_handlers(record)
        finally:
            unbind_correlation(token)
    """
    return CURRENT_CORRELATION.set(correlation)


def unbind_correlation(token: CorrelationToken) -> None:
    """Undo :func:`bind_correlation`."""
    CURRENT_CORRELATION.reset(token)


def current_correlation() -> Correlation | None:
    """The correlation of the call or consumed event being handled, if any.

    Example::

        correlation = current_correlation()
        if correlation is not None:
            audit(correlation.correlation_id, correlation.causation_id)
    """
    bound = CURRENT_CORRELATION.get()
    if bound is not None and (bound.owner is None or bound.owner is current_call_binding()):
        return bound
    return None


def correlation_headers() -> tuple[tuple[str, bytes], ...]:
    """The headers of the current correlation; outside any, of a new one (the encoder's)."""
    found = work_correlation_headers()
    return found if found is not None else Correlation.new().headers


def work_correlation_headers() -> tuple[tuple[str, bytes], ...] | None:
    """The headers of the current correlation, or the call's; ``None`` outside any work.

    An event encoded outside any work starts a chain of its own: the encoder
    then names it by the event's ``ce_id`` (as a consumer does for an event
    that came with none), with no id to make.

    Example::

        headers = work_correlation_headers()
        if headers is None:  # an event starting its own chain
            headers = (("ce_correlationid", ce_id), ("ce_causationid", ce_id))
    """
    bound = CURRENT_CORRELATION.get()
    if bound is None:
        if in_transport_call():
            return Correlation.of_call(current_call()).headers
        return None
    if bound.owner is None or bound.owner is current_call_binding():
        return bound.headers
    if in_transport_call():
        return Correlation.of_call(current_call()).headers
    return None


class CorrelationStage:
    """Pipeline stage (outermost): binds the call's :class:`Correlation` unless one is bound.

    A nested call (a handler's in-process ``send``, a consumer's handler)
    keeps the correlation it runs in. A transport's call keeps its binding
    for the rest of its task (the handlers of the events it emits share it);
    an in-process call outside any has it for its own pipeline only.
    """

    stage_name = "correlation"

    async def __call__(self, message: Any, call_next: CallNext) -> Any:
        bound = CURRENT_CORRELATION.get()
        owner = current_call_binding()
        if bound is not None and (bound.owner is None or bound.owner is owner):
            return await call_next(message)
        if in_transport_call():
            CURRENT_CORRELATION.set(Correlation.of_call(current_call(), owner=owner))
            return await call_next(message)
        token = CURRENT_CORRELATION.set(Correlation.new())
        try:
            return await call_next(message)
        finally:
            CURRENT_CORRELATION.reset(token)


class CorrelationFilter(logging.Filter):
    """Adds ``correlation_id`` (and ``causation_id``) to log records; ``-`` outside any call.

    Put it on a handler (it then sees every logger's records) and use
    ``%(correlation_id)s`` in the handler's format.

    Example::

        handler = logging.StreamHandler()
        handler.addFilter(CorrelationFilter())
        handler.setFormatter(logging.Formatter("[%(correlation_id)s] %(message)s"))
        logging.getLogger().addHandler(handler)
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if hasattr(record, "correlation_id"):  # given by its logger (the access line): kept
            return True
        bound = current_correlation()
        record.correlation_id = bound.correlation_id if bound is not None else "-"
        record.causation_id = bound.causation_id if bound is not None else "-"
        return True


def metadata_with_correlation(
    metadata: Mapping[str, str] | None, correlation_id: str
) -> tuple[tuple[str, str], ...]:
    """gRPC call metadata carrying ``correlation_id`` (for clients and tests).

    Example::

        await stub.PlaceOrder(request, metadata=metadata_with_correlation(None, "order-flow-1"))
    """
    items = dict(metadata or {})
    items[CORRELATION_METADATA] = correlation_id
    return tuple(items.items())
