"""``Router``: where a vertical slice registers its handlers.

A router is a plain object a slice keeps at module level; the app includes
the routers it wants (registries are objects, never globals). The message
type a handler takes is read from its first parameter's annotation:

- an :class:`~wirebus.Event` subclass makes an event handler (zero or more
  per event);
- any other message (a ``Command``/``Query`` dataclass or a generated
  protobuf class) makes a request handler (exactly one per type); an async
  generator function makes a streaming handler;
- ``AsyncIterator[X]`` (or ``AsyncIterable[X]``) of such a message takes the
  incoming stream of a call: a coroutine function returning one result is a
  client-streaming handler (kind ``"client_stream"``), an async generator
  function a bidirectional one (``"bidi"``). ``spec.message_type`` is ``X``.

Example::

    from wirebus import Router

    router = Router("orders")

    @router.handler
    async def get_order(query: GetOrder, orders: Orders) -> OrderView:
        return await orders.get(query.order_id)

    @router.handler
    class PlaceOrderHandler:
        def __init__(self, orders: Orders) -> None:
            self.orders = orders

        async def handle(self, cmd: PlaceOrder, ctx: Context) -> OrderRef:
            ...

    @router.handler(event=True)          # a raw protobuf class handled as an event
    async def on_audit(e: audit_pb2.Audited) -> None: ...

    # a chain of links, a fallback, a circuit breaker (wirebus.chain, wirebus.breaker)
    router.chain(GetQuote, [from_cache, from_rates_api])

    @router.handler(fallback=cached_quote, breaker=CircuitBreaker(failure_threshold=5))
    async def live_quote(query: GetLiveQuote, api: RatesApi) -> Quote: ...

    @router.handler                      # client streaming: many in, one out
    async def import_orders(cmds: AsyncIterator[PlaceOrder], orders: Orders) -> Imported:
        ids = [await orders.add(cmd) async for cmd in cmds]
        return Imported(order_ids=tuple(ids))

    @router.handler                      # bidirectional: many in, many out
    async def watch(requests: AsyncIterator[Watch]) -> AsyncIterator[Status]:
        async for request in requests:
            yield Status(...)
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, overload

from .errors import ConfigurationError
from .messages import Event
from .retry import Retry
from .signature import HandlerParams, analyse

if TYPE_CHECKING:
    from .breaker import CircuitBreaker
    from .chain import Composite, Fallback

__all__ = ["HandlerKind", "HandlerSpec", "Router"]

HandlerKind = Literal["request", "stream", "client_stream", "bidi", "event"]
H = TypeVar("H", bound=Callable[..., Any])
T = TypeVar("T", bound=Callable[..., Any])


@dataclasses.dataclass(frozen=True, slots=True)
class HandlerSpec:
    """One registered handler, as read from its definition."""

    kind: HandlerKind
    target: Callable[..., Any]
    """The function, or the class whose ``handle`` is called."""
    params: HandlerParams
    is_class: bool
    name: str
    router: str
    retry: Retry | None = None
    """Retry policy when this event handler runs in a consumer (app default if None)."""
    tombstones: bool = False
    """A consumer runs this event handler for a record with a null or empty value too."""
    composite: Composite | None = None
    """A chain, a fallback or a breaker: the callables behind this handler (``wirebus.chain``)."""

    @property
    def message_type(self) -> type:
        """The type of message this handler takes."""
        return self.params.message_type


class Router:
    """A named group of handlers of one slice; include it in an ``App``."""

    def __init__(self, name: str = "default") -> None:
        self.name = name
        self._specs: list[HandlerSpec] = []

    @property
    def specs(self) -> tuple[HandlerSpec, ...]:
        """Every handler registered here, in registration order."""
        return tuple(self._specs)

    @overload
    def handler(self, target: H, /) -> H: ...

    @overload
    def handler(
        self,
        /,
        *,
        event: bool = False,
        retry: Retry | None = None,
        tombstones: bool = False,
        fallback: Callable[..., Any] | Fallback | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> _Decorator: ...

    def handler(
        self,
        target: Any = None,
        /,
        *,
        event: bool = False,
        retry: Retry | None = None,
        tombstones: bool = False,
        fallback: Callable[..., Any] | Fallback | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> Any:
        """Register a function or a class with ``handle`` as a handler.

        ``event=True`` makes it an event handler even when the message is a
        raw protobuf class rather than an ``Event`` subclass. ``retry`` sets
        how a consumer retries this event handler before dead-lettering.
        ``tombstones=True`` has a consumer run this event handler for a
        record whose value is null (a Kafka tombstone) or empty: it gets the
        type's default message. Without it such a record is dead-lettered.
        ``fallback`` (a handler of the same request, or a
        :class:`~wirebus.chain.Fallback`) answers when this request handler
        fails or its ``breaker`` (a :class:`~wirebus.CircuitBreaker`) is open.
        """

        # Names local to the defining function (a handler or message class
        # defined inside a test, say) resolve against the caller's locals.
        localns = dict(sys._getframe(1).f_locals)

        def register(t: T) -> T:
            spec = _spec(t, self.name, force_event=event, localns=localns)
            if retry is not None:
                if spec.kind != "event":
                    raise ConfigurationError(f"{spec.name}: retry= is for event handlers")
                spec = dataclasses.replace(spec, retry=retry)
            if tombstones:
                if spec.kind != "event":
                    raise ConfigurationError(f"{spec.name}: tombstones= is for event handlers")
                spec = dataclasses.replace(spec, tombstones=True)
            if fallback is not None or breaker is not None:
                if spec.kind != "request":
                    raise ConfigurationError(
                        f"{spec.name}: fallback= and breaker= are for request handlers"
                    )
                spec = _composite([spec], spec, fallback, breaker, localns, chain=False)
            self._specs.append(spec)
            return t

        return register if target is None else register(target)

    def chain(
        self,
        message_type: type,
        links: Sequence[Callable[..., Any]],
        /,
        *,
        fallback: Callable[..., Any] | Fallback | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        """Handle ``message_type`` with an ordered chain of links (``wirebus.chain``).

        Each link is a handler of ``message_type`` (function or class) that
        returns its result, or :data:`~wirebus.PASS` to pass the request on
        (or awaits its :class:`~wirebus.Next` parameter). The chain is one
        request handler: ``fallback`` and ``breaker`` apply to it as a whole.

        Example::

            router.chain(GetQuote, [from_cache, from_rates_api, from_last_close])
        """
        localns = dict(sys._getframe(1).f_locals)
        if not links:
            raise ConfigurationError(f"the chain of {message_type.__qualname__} has no links")
        specs = [_spec(link, self.name, force_event=False, localns=localns) for link in links]
        for spec in specs:
            if spec.message_type is not message_type:
                raise ConfigurationError(
                    f"{spec.name} takes {spec.message_type.__qualname__}, but it is a link"
                    f" of the chain of {message_type.__qualname__}"
                )
        first = specs[0]
        head = HandlerSpec(
            kind="request",
            target=first.target,
            params=first.params,
            is_class=False,
            name="chain[" + " -> ".join(s.name for s in specs) + "]",
            router=self.name,
        )
        self._specs.append(_composite(specs, head, fallback, breaker, localns, chain=True))


def _composite(
    specs: list[HandlerSpec],
    head: HandlerSpec,
    fallback: Callable[..., Any] | Fallback | None,
    breaker: CircuitBreaker | None,
    localns: dict[str, Any],
    *,
    chain: bool,
) -> HandlerSpec:
    """``head`` standing for its links, fallback and breaker: one request handler."""
    from .chain import Composite, Fallback, part_of, result_type

    links = tuple(part_of(s, in_chain=chain, localns=localns) for s in specs)
    fb = fallback if isinstance(fallback, Fallback) or fallback is None else Fallback(fallback)
    fb_part = None
    if fb is not None:
        fb_spec = _spec(fb.handler, head.router, force_event=False, localns=localns)
        if fb_spec.message_type is not head.message_type:
            raise ConfigurationError(
                f"{fb_spec.name} takes {fb_spec.message_type.__qualname__}: it cannot be"
                f" the fallback of {head.name}, which takes {head.message_type.__qualname__}"
            )
        fb_part = part_of(fb_spec, in_chain=False, localns=localns)
    circuit = ""
    if breaker is not None:
        circuit = breaker.name or (
            head.name if not chain else f"chain {head.message_type.__qualname__}"
        )
    composite = Composite(links, chain, fb_part, fb.on if fb else None, breaker, circuit)
    parts = composite.parts
    params = HandlerParams(
        message_type=head.message_type,
        context=None,
        call_info=None,
        mediator=None,
        deps=composite.deps(),
        returns=result_type(parts),
    )
    return dataclasses.replace(head, params=params, is_class=False, composite=composite)


class _Decorator(Protocol):
    def __call__(self, target: T, /) -> T: ...


def _spec(
    target: Callable[..., Any], router: str, *, force_event: bool, localns: dict[str, Any]
) -> HandlerSpec:
    is_class = inspect.isclass(target)
    name = f"{target.__module__}.{target.__qualname__}"
    if is_class:
        handle = getattr(target, "handle", None)
        if handle is None or not callable(handle):
            raise ConfigurationError(f"{name}: a handler class needs a `handle` method")
        func: Callable[..., Any] = handle
    else:
        func = target
    params = analyse(func, name, skip_self=is_class, localns=localns)
    msg = params.message_type
    if not isinstance(msg, type):
        raise ConfigurationError(f"{name}: the message annotation must be a class, not {msg!r}")
    is_stream = inspect.isasyncgenfunction(func)
    if not (is_stream or inspect.iscoroutinefunction(func)):
        raise ConfigurationError(f"{name}: handlers must be `async def` (or async generators)")
    kind: HandlerKind
    if force_event or issubclass(msg, Event):
        if is_stream:
            raise ConfigurationError(f"{name}: an event handler cannot be an async generator")
        if params.streams_in:
            raise ConfigurationError(f"{name}: an event handler takes one event, not a stream")
        kind = "event"
    elif params.streams_in:
        kind = "bidi" if is_stream else "client_stream"
    else:
        kind = "stream" if is_stream else "request"
    return HandlerSpec(
        kind=kind, target=target, params=params, is_class=is_class, name=name, router=router
    )
