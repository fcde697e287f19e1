"""What a handler can ask for, and how each parameter is resolved.

A handler's first parameter is the message. Every other parameter is resolved
by its annotation, decided once when the handler is registered:

- :class:`Context` -- this call's context: ``ctx.emit(event)``;
- :class:`CallInfo` -- the gRPC call's metadata, peer and deadline;
- ``Mediator`` -- the mediator, to send further requests;
- anything else -- resolved by dishka from a per-call ``Scope.REQUEST``
  container built from the app's providers.

Example::

    from dishka import Provider, Scope, provide

    class Repos(Provider):
        orders = provide(InMemoryOrders, provides=Orders, scope=Scope.APP)

    @router.handler
    async def place_order(cmd: PlaceOrder, orders: Orders, ctx: Context, call: CallInfo) -> Ref:
        ...
"""

from __future__ import annotations

import contextvars
import dataclasses
import inspect
import time
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError

if TYPE_CHECKING:
    import grpc.aio

    from .messages import Event

__all__ = ["CallInfo", "Context", "HandlerParams", "analyse", "current_call", "current_context"]


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
        deadline = None if remaining is None else time.monotonic() + remaining
        return cls(method=method, peer=context.peer(), metadata=metadata, deadline=deadline)


_LOCAL = CallInfo(method="", peer="local", metadata={}, deadline=None)

# The gateway sets a *factory* per RPC; CallInfo is built only if asked for.
_call_factory: contextvars.ContextVar[Callable[[], CallInfo]] = contextvars.ContextVar(
    "wirebus_call_factory", default=CallInfo.local
)
_context: contextvars.ContextVar[Context | None] = contextvars.ContextVar(
    "wirebus_context", default=None
)


def current_call() -> CallInfo:
    """The call info of the request being handled (``CallInfo.local()`` in-process)."""
    return _call_factory.get()()


def current_context() -> Context | None:
    """The :class:`Context` of the request being handled, if any (for behaviours)."""
    return _context.get()


class Context:
    """Per-call context of a handler: emit events that are dispatched on success.

    Events emitted here are dispatched only after the handler returned; if it
    raises, they are dropped.

    Example::

        @router.handler
        async def place_order(cmd: PlaceOrder, ctx: Context) -> OrderRef:
            ctx.emit(OrderPlaced(order_id=..., ...))
    """

    __slots__ = ("events",)

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        """Record ``event`` for dispatch after the handler succeeds."""
        self.events.append(event)


@dataclasses.dataclass(frozen=True, slots=True)
class HandlerParams:
    """How to call one handler, decided at registration."""

    message_type: type
    context: str | None
    call_info: str | None
    mediator: str | None
    deps: tuple[tuple[str, Any], ...]
    returns: Any

    @property
    def plain(self) -> bool:
        """True when the handler takes only the message."""
        return not (self.context or self.call_info or self.mediator or self.deps)


def analyse(
    func: Callable[..., Any],
    owner: str,
    *,
    skip_self: bool = False,
    localns: dict[str, Any] | None = None,
) -> HandlerParams:
    """Read a handler's signature: message type, injected parameters, return type."""
    try:
        hints = typing.get_type_hints(func, localns=localns)
    except NameError as exc:
        raise ConfigurationError(f"{owner}: cannot resolve an annotation ({exc})") from None
    params = list(inspect.signature(func).parameters.values())
    if skip_self:
        params = params[1:]
    if not params or params[0].name not in hints:
        raise ConfigurationError(
            f"{owner}: the first parameter must be the message, annotated with its type"
        )
    from .mediator import Mediator  # local: mediator imports this module

    first, rest = params[0], params[1:]
    found: dict[str, str | None] = {"context": None, "call_info": None, "mediator": None}
    deps: list[tuple[str, Any]] = []
    for p in rest:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise ConfigurationError(f"{owner}: *args/**kwargs cannot be injected ({p.name})")
        if p.name not in hints:
            raise ConfigurationError(f"{owner}: parameter {p.name!r} needs a type annotation")
        tp = hints[p.name]
        slot = {Context: "context", CallInfo: "call_info", Mediator: "mediator"}.get(tp)
        if slot is not None:
            found[slot] = p.name
        else:
            deps.append((p.name, tp))
    return HandlerParams(
        message_type=hints[first.name],
        context=found["context"],
        call_info=found["call_info"],
        mediator=found["mediator"],
        deps=tuple(deps),
        returns=hints.get("return", inspect.Signature.empty),
    )
