"""The request pipeline: named stages, outermost first, around every handler.

One pipeline wraps every kind of handler -- requests, streams and event
handlers (in-process and in consumers). The order is explicit and printed by
``wirebus describe``::

    tracing -> authentication -> validation -> the app's behaviours -> unit of work -> handler

The runtime adds the stages it needs (a unit of work only when the app has a
database); the mediator runs whatever it is given and knows nothing of
databases, brokers or transports.

A behaviour is ``async def behaviour(message, call_next)``. Around a stream,
``await call_next(message)`` returns once the whole stream has ended (its
items flow to the caller meanwhile, one at a time), so a behaviour sees a
stream's end, its errors and its cancellation just as a request's.

Around a client-streaming or bidirectional call (kinds ``"client_stream"``
and ``"bidi"``) the ``message`` is the call's :class:`MessageStream`: the
incoming messages, not yet read (a behaviour runs once, at the call's
start, before any message arrives). ``await call_next(stream)`` spans the
whole call. A stage with work to do on each message registers it with
:meth:`MessageStream.check_each` (validation does), and it runs as the
handler pulls each message.

Example::

    async def timing(message: Any, call_next: CallNext) -> Any:
        started = time.perf_counter()
        try:
            return await call_next(message)
        finally:
            log.info("%s took %.3fs", type(message).__name__, time.perf_counter() - started)

    app = App(..., behaviours=[timing])
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Generic, Literal, Protocol, TypeVar, final

from .context import CURRENT_CONTEXT, Context

__all__ = [
    "Behaviour",
    "CallNext",
    "MessageStream",
    "Pipeline",
    "Stage",
    "new_channel",
    "run_stream",
]


class CallNext(Protocol):
    """What a behaviour calls to run the rest of the pipeline (and the handler).

    Example::

        async def audit(message: Any, call_next: CallNext) -> Any:
            result = await call_next(message)
            log.info("handled %s", type(message).__name__)
            return result
    """

    def __call__(self, message: Any, /) -> Awaitable[Any]: ...


HandlerKind = Literal["request", "stream", "client_stream", "bidi", "event"]
ALL_KINDS: frozenset[HandlerKind] = frozenset(
    ("request", "stream", "client_stream", "bidi", "event")
)
CALL_KINDS: frozenset[HandlerKind] = frozenset(("request", "stream", "client_stream", "bidi"))
"""The kinds a caller calls (every kind but event handlers)."""


class Behaviour(Protocol):
    """A pipeline behaviour: wraps every handler call, outermost first.

    Example::

        async def timing(message: Any, call_next: CallNext) -> Any:
            started = time.perf_counter()
            try:
                return await call_next(message)
            finally:
                log.info("%s took %.3fs", type(message).__name__, time.perf_counter() - started)
    """

    def __call__(self, message: Any, call_next: CallNext, /) -> Awaitable[Any]: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Stage:
    """One named stage of the pipeline and the handler kinds it wraps."""

    name: str
    behaviour: Behaviour
    kinds: frozenset[HandlerKind] = ALL_KINDS

    @classmethod
    def of(cls, behaviour: Behaviour | Stage) -> Stage:
        """A stage for ``behaviour`` (a ``Stage`` is kept as it is)."""
        if isinstance(behaviour, Stage):
            return behaviour
        name = getattr(behaviour, "stage_name", None) or _name(behaviour)
        kinds = getattr(behaviour, "kinds", None) or ALL_KINDS
        return cls(name=name, behaviour=behaviour, kinds=frozenset(kinds))


class Pipeline:
    """Stages in order, outermost first (immutable)."""

    def __init__(self, stages: Iterable[Behaviour | Stage] = ()) -> None:
        self.stages: tuple[Stage, ...] = tuple(Stage.of(s) for s in stages)

    def __len__(self) -> int:
        return len(self.stages)

    def then(self, *stages: Behaviour | Stage) -> Pipeline:
        """This pipeline with ``stages`` added innermost."""
        return Pipeline((*self.stages, *stages))

    def behaviours(self, kind: HandlerKind) -> tuple[Behaviour, ...]:
        """The behaviours that wrap a handler of ``kind``, outermost first."""
        return tuple(s.behaviour for s in self.stages if kind in s.kinds)

    def wrap(self, kind: HandlerKind, innermost: CallNext) -> CallNext:
        """Fold the behaviours of ``kind`` around ``innermost``."""
        call = innermost
        for behaviour in reversed(self.behaviours(kind)):
            call = _wrap(behaviour, call)
        return call

    def describe(self, kind: HandlerKind = "request") -> list[str]:
        """Stage names for ``kind``, outermost first, ending with the handler."""
        return [s.name for s in self.stages if kind in s.kinds] + ["handler"]


def _wrap(behaviour: Behaviour, call_next: CallNext) -> CallNext:
    def call(message: Any) -> Awaitable[Any]:
        return behaviour(message, call_next)

    return call


def _name(behaviour: object) -> str:
    target: object = behaviour if hasattr(behaviour, "__qualname__") else type(behaviour)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', '?')}"


# ---------------------------------------------------------------- incoming streams

T = TypeVar("T")


@final
class MessageStream(Generic[T]):
    """The incoming messages of a client-streaming or bidirectional call.

    What such a handler gets as its first parameter (annotated
    ``AsyncIterator[X]``), and what the pipeline's behaviours get as the
    call's ``message``. A message is read from its source (the gRPC call,
    which then lets the client send more) only when the handler asks for it,
    so a slow handler slows its client down instead of piling messages up.
    It is an ``AsyncIterator[T]`` (structurally: not an ABC subclass, so the
    stages that ask ``isinstance(message, MessageStream)`` on every call
    pay a plain type check).
    Each check registered with :meth:`check_each` runs on every message as
    it is read; one that raises fails the call.

    Example::

        stream = MessageStream(PlaceOrder, [PlaceOrder(...), PlaceOrder(...)])
        stream.check_each(validation.check)
        async for cmd in stream:
            ...
    """

    __slots__ = ("_checks", "_source", "message_type")

    def __init__(self, message_type: type[T], source: AsyncIterable[T] | Iterable[T]) -> None:
        self.message_type = message_type
        """The type of each message (the handler's ``X`` of ``AsyncIterator[X]``)."""
        self._source: AsyncIterator[T] = (
            aiter(source) if isinstance(source, AsyncIterable) else _from_sync(source)
        )
        self._checks: tuple[Callable[[T], None], ...] = ()

    def check_each(self, check: Callable[[T], None]) -> None:
        """Run ``check(message)`` on every message as it is read (innermost last)."""
        self._checks = (*self._checks, check)

    def __aiter__(self) -> MessageStream[T]:
        return self

    async def __anext__(self) -> T:
        message = await self._source.__anext__()
        for check in self._checks:
            check(message)
        return message

    async def aclose(self) -> None:
        """Stop reading: close the source (idempotent)."""
        aclose = getattr(self._source, "aclose", None)
        if aclose is not None:
            await aclose()


async def _from_sync(items: Iterable[T]) -> AsyncIterator[T]:
    for item in items:
        yield item


# ---------------------------------------------------------------- streams


class _End:
    __slots__ = ()


_END = _End()


async def run_stream(
    chain: CallNext, message: Any, ctx: Context, channel: _Channel
) -> AsyncIterator[Any]:
    """Run ``chain`` (whose innermost stage feeds ``channel``) as an async iterator.

    The chain runs in a task of its own so every behaviour's ``await
    call_next`` spans the whole stream; the handler is at most one item
    ahead of the caller, and an item leaves only when the caller asks for
    it (so the stream follows the caller's pace, and gRPC flow control).
    Closing the iterator early (the client cancelled) cancels the chain, so
    the handler's generator is closed and every behaviour sees the
    cancellation.
    """

    async def produce() -> None:
        token = CURRENT_CONTEXT.set(ctx)
        try:
            await chain(message)
            channel.finish(None)
        except BaseException as exc:
            channel.finish(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            CURRENT_CONTEXT.reset(token)

    task = asyncio.ensure_future(produce())
    try:
        while True:
            item = await channel.get()
            if item is _END:
                break
            yield item
        error = channel.error
        if error is not None:
            raise error
    finally:
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class _Channel:
    """Items of a stream's task, handed over only when the caller asks for the next one.

    The handler runs until it has its next item, then waits for the caller's
    demand (``demand()``); only then does the item's work commit and the
    item leave (``send()``). A caller that stops asking (a cancelled client)
    leaves the handler's work towards the next item uncommitted.
    """

    __slots__ = ("_demand", "_items", "error")

    def __init__(self) -> None:
        self._items: asyncio.Queue[Any] = asyncio.Queue()
        self._demand = asyncio.Semaphore(0)
        self.error: BaseException | None = None

    async def demand(self) -> None:
        """Wait until the caller asks for an item."""
        await self._demand.acquire()

    def send(self, item: Any) -> None:
        """Hand over the item the caller asked for."""
        self._items.put_nowait(item)

    async def get(self) -> Any:
        self._demand.release()
        return await self._items.get()

    def finish(self, error: BaseException | None) -> None:
        self.error = error
        self._items.put_nowait(_END)


def new_channel() -> _Channel:
    """A channel for :func:`run_stream`."""
    return _Channel()
