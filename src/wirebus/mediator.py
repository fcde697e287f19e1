"""The mediator: request dispatch, streaming dispatch and in-process events.

Every runner is compiled once when the mediator is built: the pipeline's
stages (``wirebus.pipeline``) folded around an invoker that resolves the
handler's parameters; a handler that takes only its message, emits nothing
and has no stage around it is called directly (a dict lookup and an await).
What a handler emits goes to the :class:`~wirebus.sink.EventSink` once its
work succeeded; a handler that raises emits nothing.

The mediator knows nothing of databases, brokers or transports: a unit of
work, validation or tracing are stages the runtime puts in the pipeline, and
where events go is the sink's decision.

Event handlers run sequentially in registration order, or concurrently in an
anyio task group bounded by ``max_concurrency``. ``publish()`` runs every
handler and then raises an ``ExceptionGroup`` of the ones that failed. Events
emitted by a request handler are published after the request succeeded; a
failing event handler is logged with its traceback and does not turn the
(already effective) request into an error.

Example::

    async with app.mediator() as mediator:
        ref = await mediator.send(PlaceOrder(customer_id="c1", items=(...)))
        async for order in mediator.stream(ListOrders(customer_id="c1")):
            ...
        imported = await mediator.send_stream(PlaceOrder, [cmd1, cmd2])   # client streaming
        async for status in mediator.bidi(WatchOrders, requests):          # bidirectional
            ...
        await mediator.publish(OrderShipped(order_id=ref.order_id))
"""

from __future__ import annotations

import contextlib
import logging
import types
import typing
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Sequence,
)
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, overload

import anyio

from ._lifecycle import AsyncLifecycle
from .breaker import Circuits
from .codec import EventRegistry
from .context import CURRENT_CONTEXT, Context, current_call
from .errors import HandlerNotFound, LifecycleError
from .messages import Event, ProtoMessage, Request
from .pipeline import (
    Behaviour,
    CallNext,
    HandlerKind,
    MessageStream,
    Pipeline,
    new_channel,
    run_stream,
)
from .sink import EventSink

if TYPE_CHECKING:
    from dishka import AsyncContainer

    from .inbox import InboxClaim
    from .retry import Retry
    from .router import HandlerSpec
    from .signature import HandlerParams

__all__ = [
    "Behaviour",
    "CallNext",
    "EventDispatch",
    "EventRunner",
    "Mediator",
    "builtin_arguments",
    "collect_events",
    "declares_events",
]

log = logging.getLogger(__name__)

R = TypeVar("R")

EventDispatch = Literal["sequential", "concurrent"]
_Invoke = Callable[[Any, Context], Any]
_Runner = Callable[[Any], Awaitable[Any]]


class EventRunner(Protocol):
    """Runs one event handler through the pipeline; returns the events it left to deliver."""

    def __call__(
        self, event: Any, inbox: InboxClaim | None = None, /
    ) -> Awaitable[Sequence[Any]]: ...


class _Resource(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...


_NONE: tuple[Any, ...] = ()


class Mediator(AsyncLifecycle):
    """Dispatches requests to their handler and events to theirs.

    Built by :meth:`wirebus.App.mediator`; an async context manager that
    closes the app's dependency container (and what it owns, never what it
    was only given to use) on exit.
    """

    def __init__(
        self,
        specs: Sequence[HandlerSpec],
        *,
        container: AsyncContainer | None = None,
        pipeline: Pipeline | Iterable[Behaviour] = (),
        sink: EventSink | None = None,
        registry: EventRegistry | None = None,
        event_dispatch: EventDispatch = "sequential",
        max_concurrency: int = 16,
        owns: Sequence[_Resource] = (),
        uses: Sequence[_Resource] = (),
    ) -> None:
        self.pipeline = pipeline if isinstance(pipeline, Pipeline) else Pipeline(pipeline)
        """The stages around every handler, outermost first."""
        if sink is None:
            sink = EventSink(registry if registry is not None else EventRegistry())
        self.sink = sink
        """Where emitted events go."""
        sink.bind(self.publish)
        self._container = container
        self._owns = tuple(owns)
        self._uses = tuple(uses)
        self._concurrent = event_dispatch == "concurrent"
        self._limiter = anyio.CapacityLimiter(max_concurrency)
        self._closed = False
        self.circuits = Circuits()
        """The circuit breakers' state of this mediator's handlers (``wirebus.breaker``)."""
        self._requests: dict[type, _Runner] = {}
        self._streams: dict[type, _Runner] = {}
        self._client_streams: dict[type, _Runner] = {}
        self._bidis: dict[type, _Runner] = {}
        self._event_specs: dict[type, list[HandlerSpec]] = {}
        self._event_routes: dict[type, tuple[EventRunner, ...]] = {}
        self._event_handlers: dict[
            tuple[type, frozenset[str] | None], tuple[tuple[str, Retry | None, EventRunner], ...]
        ] = {}
        for spec in specs:
            if spec.kind == "request":
                self._requests[spec.message_type] = self._request_runner(spec)
            elif spec.kind == "stream":
                self._streams[spec.message_type] = self._stream_runner(spec)
            elif spec.kind == "client_stream":
                self._client_streams[spec.message_type] = self._request_runner(spec, spec.kind)
            elif spec.kind == "bidi":
                self._bidis[spec.message_type] = self._stream_runner(spec, spec.kind)
            else:
                self._event_specs.setdefault(spec.message_type, []).append(spec)

    # ------------------------------------------------------------ public API

    @overload
    async def send(self, request: Request[R]) -> R: ...

    @overload
    async def send(self, request: ProtoMessage) -> Any: ...

    async def send(self, request: Any) -> Any:
        """Run ``request`` through the pipeline and its one handler; return its result."""
        try:
            run = self._requests[type(request)]
        except KeyError:
            raise self._not_found(request, "send") from None
        return await run(request)

    def runner(self, message_type: type) -> _Runner:
        """The compiled runner of a request type (for transports, resolved once)."""
        try:
            return self._requests[message_type]
        except KeyError:
            raise HandlerNotFound(f"no request handler for {message_type.__qualname__}") from None

    def stream_runner(self, message_type: type) -> _Runner:
        """The compiled runner of a streaming request type; awaiting it gives an async iterator."""
        try:
            return self._streams[message_type]
        except KeyError:
            raise HandlerNotFound(f"no streaming handler for {message_type.__qualname__}") from None

    async def stream(self, request: Any) -> AsyncIterator[Any]:
        """Run a streaming request; yields what its async-generator handler yields."""
        try:
            run = self._streams[type(request)]
        except KeyError:
            raise self._not_found(request, "stream") from None
        iterator: AsyncIterator[Any] = await run(request)
        try:
            async for item in iterator:
                yield item
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()

    async def send_stream(
        self, message_type: type, messages: AsyncIterable[Any] | Iterable[Any]
    ) -> Any:
        """Run a client-streaming handler of ``message_type`` over ``messages``; return its result.

        The handler (``async def h(cmds: AsyncIterator[X]) -> R``) reads
        ``messages`` as a :class:`~wirebus.pipeline.MessageStream`; its unit
        of work (with a database) is one transaction, committed when it
        returns.

        Example::

            imported = await mediator.send_stream(PlaceOrder, [cmd1, cmd2])
        """
        try:
            run = self._client_streams[message_type]
        except KeyError:
            raise self._stream_not_found(message_type, "client-streaming") from None
        stream = _message_stream(message_type, messages)
        try:
            return await run(stream)
        finally:
            await stream.aclose()

    async def bidi(
        self, message_type: type, messages: AsyncIterable[Any] | Iterable[Any]
    ) -> AsyncIterator[Any]:
        """Run a bidirectional handler of ``message_type`` over ``messages``; yield what it yields.

        The handler (``async def h(reqs: AsyncIterator[X]) -> AsyncIterator[Y]``)
        reads ``messages`` while its items come out here, one at a time;
        closing this iterator early cancels the handler (its generator is
        closed, its unit of work rolls back what no item carried out yet).

        Example::

            async for status in mediator.bidi(WatchOrders, requests):
                ...
        """
        try:
            run = self._bidis[message_type]
        except KeyError:
            raise self._stream_not_found(message_type, "bidirectional") from None
        stream = _message_stream(message_type, messages)
        try:
            iterator: AsyncGenerator[Any, None] = await run(stream)
            async with contextlib.aclosing(iterator) as items:
                async for item in items:
                    yield item
        finally:
            await stream.aclose()

    def client_stream_runner(self, message_type: type) -> _Runner:
        """The compiled runner of a client-streaming handler: ``await run(MessageStream)``."""
        try:
            return self._client_streams[message_type]
        except KeyError:
            raise self._stream_not_found(message_type, "client-streaming") from None

    def bidi_runner(self, message_type: type) -> _Runner:
        """The compiled runner of a bidirectional handler; ``await run(MessageStream)`` iterates."""
        try:
            return self._bidis[message_type]
        except KeyError:
            raise self._stream_not_found(message_type, "bidirectional") from None

    async def publish(self, event: Any) -> None:
        """Hand ``event`` to every handler of its type (and of its base classes).

        Raises ``ExceptionGroup`` of the handlers that failed, after all ran.
        """
        runners = self._event_routes.get(type(event))
        if runners is None:
            runners = self._route_event(type(event))
        if not runners:
            return
        if len(runners) > 1 and self._concurrent:
            errors = await self._publish_concurrently(runners, event)
        else:
            errors = []
            for runner in runners:
                try:
                    emitted = await runner(event)
                    if emitted:  # a cascade that cannot be delivered is this handler's failure
                        await self.sink.deliver(emitted)
                except Exception as exc:  # every handler runs; failures are raised together
                    errors.append(exc)
        if errors:
            name = type(event).__qualname__
            raise ExceptionGroup(f"{len(errors)} handler(s) of {name} failed", errors)

    def event_handlers(
        self, event_type: type, routers: frozenset[str] | None = None
    ) -> tuple[tuple[str, Retry | None, EventRunner], ...]:
        """``(name, retry, run)`` of each handler of ``event_type``, for consumers.

        ``routers`` keeps only the handlers of those routers (slices).
        ``run(event, inbox)`` runs the handler through the pipeline (a unit of
        work there records ``inbox``, the consumed event's claim, with the
        handler's state) and returns the events left to deliver: pass them
        to :meth:`dispatch` once it succeeded.
        """
        key = (event_type, routers)
        found = self._event_handlers.get(key)
        if found is None:
            found = tuple(
                (spec.name, spec.retry, self._event_runner(spec))
                for base in event_type.__mro__
                for spec in self._event_specs.get(base, ())
                if routers is None or spec.router in routers
            )
            self._event_handlers[key] = found
        return found

    def tombstone_handlers(
        self, event_type: type, routers: frozenset[str] | None = None
    ) -> frozenset[str]:
        """Names of the handlers of :meth:`event_handlers` registered with ``tombstones=True``."""
        return frozenset(
            spec.name
            for base in event_type.__mro__
            for spec in self._event_specs.get(base, ())
            if spec.tombstones and (routers is None or spec.router in routers)
        )

    async def dispatch(self, events: Sequence[Any]) -> None:
        """Hand emitted events to the sink (publisher or in-process handlers).

        A publisher failure raises (the events were not delivered); failing
        in-process handlers are logged.
        """
        await self.sink.deliver(events)

    def handles(self, message_type: type) -> bool:
        """Whether a request or streaming handler is registered for ``message_type``."""
        return (
            message_type in self._requests
            or message_type in self._streams
            or message_type in self._client_streams
            or message_type in self._bidis
        )

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start what this mediator owns or uses (each start is idempotent)."""
        if self._closed:
            raise LifecycleError("this mediator was closed; build a new one with app.mediator()")
        for resource in (*self._uses, *self._owns):
            await resource.start()

    async def stop(self) -> None:
        """Same as :meth:`close` (``async with`` calls it)."""
        await self.close()

    async def close(self) -> None:
        """Close the dependency container and what this mediator owns (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._container is not None:
            await self._container.close()
        for resource in reversed(self._owns):
            await resource.close()

    # ------------------------------------------------------------ compilation

    def _request_runner(self, spec: HandlerSpec, kind: HandlerKind = "request") -> _Runner:
        invoke = self._invoker(spec)
        behaviours = self.pipeline.behaviours(kind)
        direct = (
            not spec.is_class
            and spec.params.plain
            and not declares_events(spec.params.returns)
            and spec.composite is None
        )
        if direct and not behaviours:
            return typing.cast(_Runner, spec.target)  # nothing to add: call it as it is
        chain = self.pipeline.wrap(kind, _innermost(invoke))
        deliver = self.sink.deliver

        async def run(message: Any) -> Any:
            ctx = Context()
            token = CURRENT_CONTEXT.set(ctx)
            try:
                result = await chain(message)
            finally:
                CURRENT_CONTEXT.reset(token)
            if ctx.events:
                await deliver(ctx.take_events())
            return result

        return run

    def _stream_runner(self, spec: HandlerSpec, kind: HandlerKind = "stream") -> _Runner:
        invoke = self._invoker(spec)
        deliver = self.sink.deliver
        if not self.pipeline.behaviours(kind):

            async def direct_stream(message: Any) -> AsyncIterator[Any]:
                ctx = Context()
                async with contextlib.aclosing(invoke(message, ctx)) as items:
                    async for item in items:
                        if ctx.events:  # what was emitted before an item leaves with it
                            await deliver(ctx.take_events())
                        yield item
                if ctx.events:
                    await deliver(ctx.take_events())

            async def open_direct(message: Any) -> AsyncIterator[Any]:
                return direct_stream(message)

            return open_direct

        async def innermost(message: Any) -> None:
            ctx = typing.cast(Context, CURRENT_CONTEXT.get())
            channel = ctx.stream
            # aclosing: a cancelled or failed stream closes the handler's generator
            # here, inside the unit of work, not later from the garbage collector
            async with contextlib.aclosing(invoke(message, ctx)) as items:
                async for item in items:
                    await channel.demand()  # the caller asks for this item
                    for hook in tuple(ctx.item_hooks):
                        await hook()  # a unit of work commits what led to this item
                    if ctx.events:
                        await deliver(ctx.take_events())
                    channel.send(item)

        chain = self.pipeline.wrap(kind, innermost)

        async def whole(message: Any) -> None:
            await chain(message)
            ctx = typing.cast(Context, CURRENT_CONTEXT.get())
            if ctx.events:
                await deliver(ctx.take_events())

        async def open_stream(message: Any) -> AsyncIterator[Any]:
            ctx = Context()
            ctx.stream = channel = new_channel()
            return run_stream(whole, message, ctx, channel)

        return open_stream

    def _event_runner(self, spec: HandlerSpec) -> EventRunner:
        """``run(event, inbox) -> events to deliver``; the caller delivers them.

        Delivering outside the runner keeps a concurrency slot from being
        held while cascaded events wait for slots of their own.
        """
        invoke = self._invoker(spec)
        plain = not spec.is_class and spec.params.plain
        behaviours = self.pipeline.behaviours("event")
        if plain and spec.params.returns in (None, type(None)) and not behaviours:
            target = spec.target

            async def call(event: Any, inbox: InboxClaim | None = None) -> Sequence[Any]:
                await target(event)
                return _NONE

            return call

        chain = self.pipeline.wrap("event", _innermost(invoke))

        async def run(event: Any, inbox: InboxClaim | None = None) -> Sequence[Any]:
            ctx = Context(inbox=inbox)
            token = CURRENT_CONTEXT.set(ctx)
            try:
                await chain(event)
            finally:
                CURRENT_CONTEXT.reset(token)
            return ctx.events

        return run

    def _invoker(self, spec: HandlerSpec) -> _Invoke:
        """``invoke(message, ctx)``: call the handler with its parameters resolved."""
        if spec.composite is not None:  # a chain, fallback or breaker (wirebus.chain)
            from .chain import compile_composite

            return compile_composite(
                spec.composite,
                name=spec.name,
                container=self._container,
                mediator=self,
                circuits=self.circuits,
            )
        p = spec.params
        target = spec.target
        fixed = builtin_arguments(p, self)
        returns_events = declares_events(p.returns)
        if not spec.is_class and not p.deps:
            direct = _direct_call(target, p.context, p.call_info, p.mediator, self)
            if not returns_events:
                return direct

            async def collecting(message: Any, ctx: Context) -> Any:
                result = await direct(message, ctx)
                collect_events(ctx, result)
                return result

            return collecting
        container = self._container
        if container is None:  # pragma: no cover - App always builds one
            raise LifecycleError(
                f"{spec.name} needs dependencies but the mediator has no container"
            )
        deps = p.deps
        is_class = spec.is_class
        if spec.kind in ("stream", "bidi"):

            async def invoke_stream(message: Any, ctx: Context) -> AsyncIterator[Any]:
                async with container() as scope:
                    kwargs = {n: get(ctx) for n, get in fixed}
                    for name, tp in deps:
                        kwargs[name] = await scope.get(tp)
                    fn = (await scope.get(target)).handle if is_class else target
                    async with contextlib.aclosing(fn(message, **kwargs)) as items:
                        async for item in items:
                            yield item

            return invoke_stream

        async def invoke(message: Any, ctx: Context) -> Any:
            async with container() as scope:
                kwargs = {n: get(ctx) for n, get in fixed}
                for name, tp in deps:
                    kwargs[name] = await scope.get(tp)
                fn = (await scope.get(target)).handle if is_class else target
                result = await fn(message, **kwargs)
            if returns_events:
                collect_events(ctx, result)
            return result

        return invoke

    # ------------------------------------------------------------ events

    def _route_event(self, event_type: type) -> tuple[EventRunner, ...]:
        """Handlers of ``event_type`` and of its bases, compiled and cached."""
        runners = tuple(run for _, _, run in self.event_handlers(event_type))
        self._event_routes[event_type] = runners
        return runners

    async def _publish_concurrently(
        self, runners: Sequence[EventRunner], event: Any
    ) -> list[Exception]:
        errors: list[Exception] = []

        async def one(runner: EventRunner) -> None:
            try:
                async with self._limiter:
                    emitted = await runner(event)
                if emitted:  # outside the slot: cascades wait for slots of their own
                    await self.sink.deliver(emitted)
            except Exception as exc:  # collected and raised as a group by publish()
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            for runner in runners:
                tg.start_soon(one, runner)
        return errors

    @staticmethod
    def _stream_not_found(message_type: type, what: str) -> HandlerNotFound:
        return HandlerNotFound(
            f"no {what} handler for {message_type.__qualname__}: register one taking"
            f" AsyncIterator[{message_type.__qualname__}] and include its router in the App"
        )

    @staticmethod
    def _not_found(request: Any, verb: str) -> HandlerNotFound:
        name = type(request).__qualname__
        if isinstance(request, Event):
            return HandlerNotFound(f"{name} is an event: use publish(), not {verb}()")
        return HandlerNotFound(
            f"no {'streaming ' if verb == 'stream' else ''}handler for {name}:"
            " register one with @router.handler and include its router in the App"
        )


def _message_stream(
    message_type: type, messages: AsyncIterable[Any] | Iterable[Any]
) -> MessageStream[Any]:
    if isinstance(messages, MessageStream):
        return messages
    return MessageStream(message_type, messages)


def _innermost(invoke: _Invoke) -> CallNext:
    """The handler as the pipeline's last stage: it reads the call's context."""

    def innermost(message: Any) -> Awaitable[Any]:
        ctx = CURRENT_CONTEXT.get()
        return typing.cast(Awaitable[Any], invoke(message, ctx if ctx is not None else Context()))

    return innermost


def builtin_arguments(
    params: HandlerParams, mediator: Mediator
) -> list[tuple[str, Callable[[Context], Any]]]:
    """``(name, ctx -> value)`` of each built-in parameter a handler takes: its
    :class:`Context`, :class:`~wirebus.CallInfo` or the :class:`Mediator`.

    Built once per handler at start-up (the mediator and handler chains).

    Example::

        fixed = builtin_arguments(spec.params, mediator)
        kwargs = {name: get(ctx) for name, get in fixed}
    """
    fixed: list[tuple[str, Callable[[Context], Any]]] = []
    if params.context:
        fixed.append((params.context, lambda ctx: ctx))
    if params.call_info:
        fixed.append((params.call_info, lambda _ctx: current_call()))
    if params.mediator:
        fixed.append((params.mediator, lambda _ctx: mediator))
    return fixed


def declares_events(annotation: Any) -> bool:
    """Whether a handler's return annotation says it returns events to emit.

    Example::

        declares_events(list[OrderPlaced])   # True
        declares_events(OrderView)           # False
    """
    candidates: Iterable[Any] = (annotation,)
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, Sequence, typing.Union, types.UnionType):
        candidates = typing.get_args(annotation)
    return any(isinstance(c, type) and issubclass(c, Event) for c in candidates)


def collect_events(ctx: Context, result: Any) -> None:
    """Add the events a handler returned (one, or a list/tuple of them) to ``ctx.events``.

    Example::

        collect_events(ctx, [OrderPlaced(order_id="o-1")])
    """
    if isinstance(result, Event):
        ctx.events.append(result)
    elif isinstance(result, (list, tuple)):
        ctx.events.extend(e for e in result if isinstance(e, Event))


def _direct_call(
    target: Callable[..., Any],
    context: str | None,
    call_info: str | None,
    mediator_param: str | None,
    mediator: Mediator,
) -> _Invoke:
    """``invoke(message, ctx)`` for a function with built-in parameters only.

    Parameter names are fixed at registration, so the call is compiled with
    them spelled out: no per-call kwargs dict.
    """
    if not (context or call_info or mediator_param):
        return lambda message, _ctx: target(message)
    args = [
        f"{name}={expr}"
        for name, expr in (
            (context, "ctx"),
            (call_info, "_current_call()"),
            (mediator_param, "_mediator"),
        )
        if name
    ]
    namespace: dict[str, Any] = {
        "_target": target,
        "_current_call": current_call,
        "_mediator": mediator,
    }
    source = f"def invoke(message, ctx):\n    return _target(message, {', '.join(args)})\n"
    exec(compile(source, f"<wirebus invoker {target.__qualname__}>", "exec"), namespace)
    return typing.cast(_Invoke, namespace["invoke"])
