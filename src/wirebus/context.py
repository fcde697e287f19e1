"""The per-call context: what one call of a handler carries, and how a transport binds it.

- :class:`CallInfo` -- the transport call a request arrived on (metadata,
  peer, deadline); built lazily, only when a handler or behaviour asks.
- :class:`Context` -- the events a handler emits (``ctx.emit``), the inbox
  claim of the consumed event it handles, and the unit of work the pipeline
  opened for it.
- :func:`bind_call` -- how a transport (the gateway) makes a call's info
  visible to everything it runs; :func:`current_call` and
  :func:`current_context` read them back in behaviours.

Example::

    token = bind_call(lambda: CallInfo(method=path, peer=peer, metadata=md, deadline=None))
    try:
        await runner(message)
    finally:
        unbind_call(token)
"""

from __future__ import annotations

import contextvars
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import grpc.aio

    from .inbox import InboxClaim
    from .messages import Event

__all__ = [
    "CURRENT_CONTEXT",
    "CallInfo",
    "PeerCertificate",
    "Context",
    "bind_call",
    "current_call",
    "current_context",
    "in_transport_call",
    "unbind_call",
]

# grpc answers time_remaining() with a huge number when the caller set no
# deadline; anything beyond a year is "no deadline".
_NO_DEADLINE = 365 * 24 * 3600.0


@dataclasses.dataclass(frozen=True, slots=True)
class PeerCertificate:
    """The verified client certificate of a mutual-TLS call."""

    common_name: str
    subject_alt_names: tuple[str, ...]
    subject: str
    """The whole subject (``CN=...,O=...``) as grpc reports it."""


def peer_certificate(auth_context: Mapping[str, Iterable[bytes]]) -> PeerCertificate | None:
    """The client certificate grpc verified for a call, from its ``auth_context()``."""
    if not auth_context.get("x509_pem_cert") and not auth_context.get("x509_common_name"):
        return None

    def texts(key: str) -> tuple[str, ...]:
        return tuple(v.decode(errors="replace") for v in auth_context.get(key, ()))

    names = texts("x509_common_name")
    subject = texts("x509_subject")
    return PeerCertificate(
        common_name=names[0] if names else "",
        subject_alt_names=texts("x509_subject_alternative_name"),
        subject=subject[0] if subject else "",
    )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CallInfo:
    """The transport call a request arrived on.

    ``metadata`` holds the first value of each key (keys are lower case);
    ``deadline`` is a ``time.monotonic()`` instant or ``None`` for no
    deadline. A request sent in-process gets ``CallInfo.local()``.

    Example::

        @router.handler
        async def get_order(q: GetOrder, call: CallInfo) -> OrderView:
            tenant = call.metadata.get("x-tenant", "default")
    """

    method: str
    peer: str
    metadata: Mapping[str, str | bytes]
    deadline: float | None
    certificate: PeerCertificate | None = None
    """The client certificate grpc verified (mutual TLS), else ``None``."""

    def time_remaining(self) -> float | None:
        """Seconds left before the deadline, or ``None`` if there is none."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    @classmethod
    def local(cls) -> CallInfo:
        """The call info of a request sent in-process (no transport)."""
        return _LOCAL

    @classmethod
    def from_grpc(cls, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> CallInfo:
        """Read a grpc.aio servicer context (done lazily, only when asked for)."""
        metadata: dict[str, str | bytes] = {}
        for key, value in context.invocation_metadata() or ():
            metadata.setdefault(key, value)
        remaining = context.time_remaining()
        deadline = (
            None if remaining is None or remaining > _NO_DEADLINE else time.monotonic() + remaining
        )
        certificate = peer_certificate(context.auth_context() or {})
        return cls(
            method=method,
            peer=context.peer(),
            metadata=metadata,
            deadline=deadline,
            certificate=certificate,
        )


_LOCAL = CallInfo(method="", peer="local", metadata={}, deadline=None)

# A transport binds a *factory* per call; CallInfo is built only if asked for.
_LOCAL_FACTORY: Callable[[], CallInfo] = CallInfo.local
_call_factory: contextvars.ContextVar[Callable[[], CallInfo]] = contextvars.ContextVar(
    "wirebus_call_factory", default=_LOCAL_FACTORY
)
CURRENT_CONTEXT: contextvars.ContextVar[Context | None] = contextvars.ContextVar(
    "wirebus_context", default=None
)
"""The :class:`Context` of the call being handled: set by the mediator and the
pipeline's unit of work (``token = CURRENT_CONTEXT.set(ctx)`` ... ``reset``);
behaviours read it through :func:`current_context`."""

CallToken = contextvars.Token[Callable[[], CallInfo]]


def bind_call(factory: Callable[[], CallInfo]) -> CallToken:
    """Make ``factory()`` the call info of everything run from here (a transport's job).

    Returns a token for :func:`unbind_call`. A transport that runs each call
    in a task of its own (grpc.aio does) may leave the binding in place.
    """
    return _call_factory.set(factory)


def unbind_call(token: CallToken) -> None:
    """Undo :func:`bind_call`."""
    _call_factory.reset(token)


def current_call() -> CallInfo:
    """The call info of the request being handled (``CallInfo.local()`` in-process)."""
    return _call_factory.get()()


def in_transport_call() -> bool:
    """Whether a transport (the gateway) bound the call being handled (no CallInfo is built)."""
    return _call_factory.get() is not _LOCAL_FACTORY


def current_call_binding() -> object:
    """The transport's binding of the call being handled (an identity: one per call)."""
    return _call_factory.get()


def current_context() -> Context | None:
    """The :class:`Context` of the call being handled, if any (for behaviours)."""
    return CURRENT_CONTEXT.get()


ItemHook = Callable[[], Awaitable[None]]


class Context:
    """Per-call context of a handler: emit events that are dispatched on success.

    Events emitted here leave only after the handler returned (for a stream:
    when it yields its next item, and at its end); if it raises, they are
    dropped. ``inbox`` is the claim of the consumed event being handled (the
    unit of work records it with the handler's state); ``unit_of_work`` is
    the transaction the pipeline opened for this call, if any.

    Example::

        @router.handler
        async def place_order(cmd: PlaceOrder, ctx: Context) -> OrderRef:
            ctx.emit(OrderPlaced(order_id=..., ...))
    """

    __slots__ = ("events", "inbox", "item_hooks", "stream", "unit_of_work")

    def __init__(self, *, inbox: InboxClaim | None = None) -> None:
        self.events: list[Event] = []
        self.inbox = inbox
        self.unit_of_work: Any = None
        self.item_hooks: list[ItemHook] = []
        """Run by a stream before each item leaves (a unit of work commits there)."""
        self.stream: Any = None
        """The channel a streaming handler's items leave through (the mediator's)."""

    def emit(self, event: Event) -> None:
        """Record ``event`` for dispatch after the handler succeeds."""
        self.events.append(event)

    def take_events(self) -> list[Event]:
        """The events emitted so far, removed from the context."""
        events, self.events = self.events, []
        return events
