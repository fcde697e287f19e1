"""The mediator: send, stream, publish, emitted events, behaviours and DI.

Every test builds its own ``Router`` and ``App`` (registries are objects), so
tests share no handlers. Messages here are unbound: the mediator dispatches
on the Python type and never needs protobuf, except where a handler takes a
generated protobuf class on purpose.
"""

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest
from dishka import Provider, Scope, provide
from shop.orders.v1 import orders_pb2

from wirebus import (
    App,
    CallInfo,
    Command,
    ConfigurationError,
    Context,
    Event,
    HandlerNotFound,
    Mediator,
    NotFound,
    Query,
    Router,
    Stage,
    current_call,
    current_context,
)

# A deadlock or a missed wake-up must fail the test, not hang the suite.
TIMEOUT = 5


class Ping(Command[str]):
    text: str = ""


class Add(Query[int]):
    a: int
    b: int


class CountTo(Query[int]):
    upto: int


class Happened(Event):
    n: int = 0


class SpecialHappened(Happened):
    """A subclass: handlers of ``Happened`` receive it too."""


class Followed(Event):
    n: int = 0


def app_with(*handlers: Callable[..., Any], **app_kwargs: Any) -> App:
    router = Router("test")
    for h in handlers:
        router.handler(h)
    return App(routers=[router], **app_kwargs)


# ---------------------------------------------------------------- send


async def test_send_returns_the_handler_result() -> None:
    async def add(q: Add) -> int:
        return q.a + q.b

    async with app_with(add).mediator() as m:
        assert await m.send(Add(a=2, b=3)) == 5


async def test_send_raises_what_the_handler_raises() -> None:
    async def ping(cmd: Ping) -> str:
        raise NotFound("nothing here", reason="NOPE")

    async with app_with(ping).mediator() as m:
        with pytest.raises(NotFound, match="nothing here") as info:
            await m.send(Ping())

    assert info.value.reason == "NOPE"


async def test_send_without_a_handler_raises_handler_not_found() -> None:
    async def add(q: Add) -> int:
        return 0

    async with app_with(add).mediator() as m:
        with pytest.raises(
            HandlerNotFound, match=r"no handler for Ping: register one with @router\.handler"
        ):
            await m.send(Ping())


async def test_sending_an_event_raises_handler_not_found_telling_to_use_publish() -> None:
    async def on_happened(e: Happened) -> None:
        pass

    async with app_with(on_happened).mediator() as m:
        with pytest.raises(
            HandlerNotFound, match=r"Happened is an event: use publish\(\), not send\(\)"
        ):
            await m.send(Happened())


def test_a_second_handler_for_the_same_request_is_a_configuration_error_naming_both() -> None:
    async def first(cmd: Ping) -> str:
        return "1"

    async def second(cmd: Ping) -> str:
        return "2"

    app = app_with(first, second)

    with pytest.raises(
        ConfigurationError, match=r"Ping has two handlers: \S+\.first and \S+\.second"
    ):
        app.mediator()


async def test_a_handler_may_take_a_generated_protobuf_message_directly() -> None:
    async def get_order(q: orders_pb2.GetOrderRequest) -> orders_pb2.Order:
        return orders_pb2.Order(order_id=q.order_id, customer_id="c1")

    async with app_with(get_order).mediator() as m:
        order = await m.send(orders_pb2.GetOrderRequest(order_id="o1"))

    assert order == orders_pb2.Order(order_id="o1", customer_id="c1")


async def test_a_protobuf_request_without_a_handler_is_not_found() -> None:
    async def get_order(q: orders_pb2.GetOrderRequest) -> orders_pb2.Order:
        return orders_pb2.Order()

    async with app_with(get_order).mediator() as m:
        with pytest.raises(HandlerNotFound, match="CancelOrderRequest"):
            await m.send(orders_pb2.CancelOrderRequest(order_id="o1"))


# ---------------------------------------------------------------- stream


async def test_stream_yields_what_the_async_generator_handler_yields() -> None:
    async def count(q: CountTo) -> AsyncIterator[int]:
        for i in range(1, q.upto + 1):
            yield i

    async with app_with(count).mediator() as m:
        got = [i async for i in m.stream(CountTo(upto=3))]

    assert got == [1, 2, 3]


async def test_stream_without_a_streaming_handler_raises_handler_not_found() -> None:
    async def count(q: CountTo) -> int:  # a request handler, not a stream
        return q.upto

    async with app_with(count).mediator() as m:
        with pytest.raises(HandlerNotFound, match="no streaming handler for CountTo"):
            [i async for i in m.stream(CountTo(upto=1))]


async def test_events_a_stream_emits_leave_with_its_next_item_and_at_its_end() -> None:
    seen: list[str] = []

    async def count(q: CountTo, ctx: Context) -> AsyncIterator[int]:
        ctx.emit(Happened(n=q.upto))
        yield 1
        yield 2
        ctx.emit(Happened(n=q.upto + 1))

    async def on_happened(e: Happened) -> None:
        seen.append(f"event {e.n}")

    async with app_with(count, on_happened).mediator() as m:
        async for i in m.stream(CountTo(upto=7)):
            seen.append(f"item {i}")

    assert seen == ["event 7", "item 1", "item 2", "event 8"]


# ---------------------------------------------------------------- publish


async def test_publishing_an_event_without_handlers_does_nothing() -> None:
    async def ping(cmd: Ping) -> str:
        return ""

    async with app_with(ping).mediator() as m:
        assert await m.publish(Happened()) is None


async def test_sequential_publish_runs_handlers_one_after_another_in_registration_order() -> None:
    log: list[str] = []

    def handler(name: str) -> Callable[[Happened], Awaitable[None]]:
        async def on_happened(e: Happened) -> None:
            log.append(f"{name} start")
            await anyio.lowlevel.checkpoint()  # a chance for another handler to interleave
            log.append(f"{name} end")

        on_happened.__qualname__ = name
        return on_happened

    async with app_with(handler("a"), handler("b"), handler("c")).mediator() as m:
        await m.publish(Happened())

    assert log == ["a start", "a end", "b start", "b end", "c start", "c end"]


async def test_concurrent_publish_overlaps_handlers_but_never_exceeds_max_concurrency() -> None:
    running = 0
    peak = 0
    finished: list[int] = []
    two_running = anyio.Event()

    def handler(i: int) -> Callable[[Happened], Awaitable[None]]:
        async def on_happened(e: Happened) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            if running == 2:
                two_running.set()
            # The first handler can only get past this if a second one runs alongside it.
            await two_running.wait()
            for _ in range(3):
                await anyio.lowlevel.checkpoint()  # let any extra handler start, if allowed
            running -= 1
            finished.append(i)

        on_happened.__qualname__ = f"h{i}"
        return on_happened

    app = app_with(*(handler(i) for i in range(5)), event_dispatch="concurrent", max_concurrency=2)
    async with app.mediator() as m:
        with anyio.fail_after(TIMEOUT):
            await m.publish(Happened())

    assert sorted(finished) == [0, 1, 2, 3, 4]
    assert peak == 2


@pytest.mark.parametrize("dispatch", ["sequential", "concurrent"])
async def test_publish_raises_an_exception_group_after_every_handler_ran(dispatch: str) -> None:
    ran: list[str] = []

    async def fails_first(e: Happened) -> None:
        ran.append("fails_first")
        raise ValueError("first")

    async def succeeds(e: Happened) -> None:
        ran.append("succeeds")

    async def fails_last(e: Happened) -> None:
        ran.append("fails_last")
        raise KeyError("last")

    app = app_with(fails_first, succeeds, fails_last, event_dispatch=dispatch)
    async with app.mediator() as m:
        with pytest.raises(ExceptionGroup, match=r"2 handler\(s\) of Happened failed") as info:
            await m.publish(Happened())

    assert sorted(ran) == ["fails_first", "fails_last", "succeeds"]
    assert sorted(type(e).__name__ for e in info.value.exceptions) == ["KeyError", "ValueError"]


async def test_handlers_of_a_base_event_class_receive_its_subclasses() -> None:
    got: list[tuple[str, type]] = []

    async def on_happened(e: Happened) -> None:
        got.append(("happened", type(e)))

    async def on_special(e: SpecialHappened) -> None:
        got.append(("special", type(e)))

    async def on_any(e: Event) -> None:
        got.append(("any", type(e)))

    async with app_with(on_happened, on_special, on_any).mediator() as m:
        await m.publish(SpecialHappened(n=1))
        await m.publish(Followed())

    assert got == [
        ("special", SpecialHappened),
        ("happened", SpecialHappened),
        ("any", SpecialHappened),
        ("any", Followed),
    ]


async def test_a_generated_protobuf_class_can_be_handled_as_an_event() -> None:
    got: list[str] = []
    router = Router()

    @router.handler(event=True)
    async def on_cancelled(e: orders_pb2.OrderCancelled) -> None:
        got.append(e.order_id)

    async with App(routers=[router]).mediator() as m:
        await m.publish(orders_pb2.OrderCancelled(order_id="o9"))

    assert got == ["o9"]


# ---------------------------------------------------------------- emitted events


async def test_events_emitted_with_ctx_emit_are_dispatched_after_the_handler_returned() -> None:
    log: list[str] = []

    async def ping(cmd: Ping, ctx: Context) -> str:
        ctx.emit(Happened(n=1))
        log.append("emitted")
        await anyio.lowlevel.checkpoint()
        log.append("handler returns")
        return "pong"

    async def on_happened(e: Happened) -> None:
        log.append(f"event {e.n}")

    async with app_with(ping, on_happened).mediator() as m:
        assert await m.send(Ping()) == "pong"

    assert log == ["emitted", "handler returns", "event 1"]


async def test_events_emitted_by_an_event_handler_are_dispatched_after_it_returned() -> None:
    log: list[str] = []

    async def on_happened(e: Happened, ctx: Context) -> None:
        ctx.emit(Followed(n=e.n))
        await anyio.lowlevel.checkpoint()
        log.append("happened handler returns")

    async def on_followed(e: Followed) -> None:
        log.append(f"followed {e.n}")

    async with app_with(on_happened, on_followed).mediator() as m:
        await m.publish(Happened(n=5))

    assert log == ["happened handler returns", "followed 5"]


async def test_events_returned_by_a_request_handler_are_published() -> None:
    got: list[int] = []

    async def ping(cmd: Ping) -> Happened:
        return Happened(n=3)

    async def many(q: Add) -> list[Happened]:
        return [Happened(n=q.a), Happened(n=q.b)]

    async def on_happened(e: Happened) -> None:
        got.append(e.n)

    async with app_with(ping, many, on_happened).mediator() as m:
        assert await m.send(Ping()) == Happened(n=3)
        await m.send(Add(a=4, b=5))

    assert got == [3, 4, 5]


async def test_a_handler_that_raises_after_emitting_publishes_nothing() -> None:
    got: list[Event] = []

    async def ping(cmd: Ping, ctx: Context) -> str:
        ctx.emit(Happened(n=1))
        raise RuntimeError("boom")

    async def on_happened(e: Happened) -> None:
        got.append(e)

    async with app_with(ping, on_happened).mediator() as m:
        with pytest.raises(RuntimeError, match="boom"):
            await m.send(Ping())

    assert got == []


async def test_an_event_handler_that_raises_after_emitting_publishes_nothing() -> None:
    got: list[Event] = []

    async def on_happened(e: Happened, ctx: Context) -> None:
        ctx.emit(Followed())
        raise RuntimeError("boom")

    async def on_followed(e: Followed) -> None:
        got.append(e)

    async with app_with(on_happened, on_followed).mediator() as m:
        with pytest.raises(ExceptionGroup):
            await m.publish(Happened())

    assert got == []


async def test_a_failing_event_handler_does_not_fail_the_send_that_emitted_it_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []

    async def ping(cmd: Ping, ctx: Context) -> str:
        ctx.emit(Happened())
        return "pong"

    async def on_happened(e: Happened) -> None:
        raise RuntimeError("event handler broke")

    async def also_on_happened(e: Happened) -> None:
        ran.append("second handler")

    caplog.set_level(logging.ERROR, logger="wirebus.sink")
    async with app_with(ping, on_happened, also_on_happened).mediator() as m:
        assert await m.send(Ping()) == "pong"

    assert ran == ["second handler"]
    [record] = [r for r in caplog.records if r.name == "wirebus.sink"]
    assert record.levelno == logging.ERROR
    assert "event handlers failed for Happened after the work that emitted it succeeded" in (
        record.getMessage()
    )
    assert record.exc_info is not None
    assert "event handler broke" in caplog.text


async def test_events_cascade_from_event_handlers_by_emit_and_by_return() -> None:
    log: list[str] = []

    async def ping(cmd: Ping, ctx: Context) -> str:
        ctx.emit(Happened(n=1))
        return "pong"

    async def on_happened(e: Happened, ctx: Context) -> None:
        log.append(f"happened {e.n}")
        ctx.emit(Followed(n=e.n + 1))

    async def on_followed(e: Followed) -> SpecialHappened | None:
        log.append(f"followed {e.n}")
        return SpecialHappened(n=e.n + 1) if e.n < 3 else None

    async with app_with(ping, on_happened, on_followed).mediator() as m:
        await m.send(Ping())

    # Ping -> Happened(1) -> Followed(2) -> SpecialHappened(3) -> Followed(4) -> stop
    assert log == ["happened 1", "followed 2", "happened 3", "followed 4"]


async def test_concurrent_cascades_do_not_deadlock_on_the_concurrency_limit() -> None:
    got: list[str] = []

    async def first(e: Happened, ctx: Context) -> None:
        ctx.emit(Followed(n=1))

    async def second(e: Happened, ctx: Context) -> None:
        ctx.emit(Followed(n=2))

    async def on_followed_a(e: Followed) -> None:
        got.append(f"a{e.n}")

    async def on_followed_b(e: Followed) -> None:
        got.append(f"b{e.n}")

    app = app_with(
        first, second, on_followed_a, on_followed_b, event_dispatch="concurrent", max_concurrency=2
    )
    async with app.mediator() as m:
        with anyio.fail_after(1):
            await m.publish(Happened())

    assert sorted(got) == ["a1", "a2", "b1", "b2"]


# ---------------------------------------------------------------- behaviours


def recording(
    name: str, log: list[str]
) -> Callable[[Any, Callable[[Any], Awaitable[Any]]], Awaitable[Any]]:
    async def behaviour(request: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
        log.append(f"{name} before {type(request).__name__}")
        result = await call_next(request)
        log.append(f"{name} after")
        return result

    return behaviour


async def test_behaviours_wrap_every_request_with_the_first_added_outermost() -> None:
    log: list[str] = []

    async def add(q: Add) -> int:
        log.append("handler")
        return q.a + q.b

    async def ping(cmd: Ping, ctx: Context) -> str:
        return "pong"

    app = app_with(add, ping, behaviours=[recording("outer", log)])
    app.add_behaviour(recording("inner", log))
    async with app.mediator() as m:
        assert await m.send(Add(a=1, b=1)) == 2
        assert await m.send(Ping()) == "pong"

    assert log == [
        "outer before Add",
        "inner before Add",
        "handler",
        "inner after",
        "outer after",
        "outer before Ping",
        "inner before Ping",
        "inner after",
        "outer after",
    ]


async def test_behaviours_also_wrap_streaming_requests() -> None:
    log: list[str] = []

    async def count(q: CountTo) -> AsyncIterator[int]:
        yield q.upto

    async with app_with(count, behaviours=[recording("b", log)]).mediator() as m:
        assert [i async for i in m.stream(CountTo(upto=2))] == [2]

    assert log[0] == "b before CountTo"


async def test_a_behaviour_can_short_circuit_without_calling_the_handler() -> None:
    called: list[str] = []

    async def add(q: Add) -> int:
        called.append("handler")
        return q.a + q.b

    async def cached(request: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
        return 42

    async with app_with(add, behaviours=[cached]).mediator() as m:
        assert await m.send(Add(a=1, b=1)) == 42

    assert called == []


async def test_a_behaviour_sees_the_handlers_exception_and_may_translate_it() -> None:
    seen: list[BaseException] = []

    async def ping(cmd: Ping) -> str:
        raise LookupError("missing")

    async def translate(request: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
        try:
            return await call_next(request)
        except LookupError as exc:
            seen.append(exc)
            raise NotFound(str(exc)) from exc

    async with app_with(ping, behaviours=[translate]).mediator() as m:
        with pytest.raises(NotFound, match="missing"):
            await m.send(Ping())

    assert [type(e) for e in seen] == [LookupError]


async def test_a_behaviour_reads_the_calls_context_and_its_emitted_events_are_published() -> None:
    got: list[int] = []

    async def ping(cmd: Ping, ctx: Context) -> str:
        ctx.emit(Happened(n=1))
        return "pong"

    async def audit(request: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
        result = await call_next(request)
        ctx = current_context()
        assert ctx is not None
        ctx.emit(Happened(n=2))
        return result

    async def on_happened(e: Happened) -> None:
        got.append(e.n)

    requests_only = Stage("audit", audit, kinds=frozenset({"request"}))
    async with app_with(ping, on_happened, behaviours=[requests_only]).mediator() as m:
        await m.send(Ping())

    assert got == [1, 2]
    assert current_context() is None


# ---------------------------------------------------------------- dependency injection


class Clock:
    """APP scope: one per mediator."""


class Session:
    """REQUEST scope: one per call."""

    closed = False


class Finalised:
    """APP scope with a finaliser run when the mediator closes."""

    def __init__(self) -> None:
        self.closed = False


class Deps(Provider):
    clock = provide(Clock, scope=Scope.APP)
    session = provide(Session, scope=Scope.REQUEST)

    @provide(scope=Scope.APP)
    async def finalised(self) -> AsyncIterator[Finalised]:
        resource = Finalised()
        yield resource
        resource.closed = True


async def test_handler_parameters_are_resolved_by_type_from_the_providers() -> None:
    got: list[tuple[Clock, Session]] = []

    async def ping(cmd: Ping, session: Session, clock: Clock) -> str:
        got.append((clock, session))
        return "pong"

    async with app_with(ping, providers=[Deps()]).mediator() as m:
        await m.send(Ping())
        await m.send(Ping())

    (clock1, session1), (clock2, session2) = got
    assert (type(clock1), type(session1)) == (Clock, Session)
    assert clock1 is clock2, "an APP-scoped dependency is shared by every call"
    assert session1 is not session2, "a REQUEST-scoped dependency is fresh per send"


async def test_app_scoped_dependencies_are_finalised_when_the_mediator_closes() -> None:
    got: list[Finalised] = []

    async def ping(cmd: Ping, resource: Finalised) -> str:
        got.append(resource)
        return ""

    async with app_with(ping, providers=[Deps()]).mediator() as m:
        await m.send(Ping())
        assert not got[0].closed

    assert got[0].closed


async def test_a_class_handler_gets_its_init_dependencies_and_is_built_per_call() -> None:
    instances: list[Any] = []

    class PingHandler:
        def __init__(self, clock: Clock, session: Session) -> None:
            self.clock = clock
            self.session = session
            instances.append(self)

        async def handle(self, cmd: Ping, ctx: Context) -> str:
            ctx.emit(Happened())
            return f"pong {cmd.text}"

    async with app_with(PingHandler, providers=[Deps()]).mediator() as m:
        assert await m.send(Ping(text="a")) == "pong a"
        assert await m.send(Ping(text="b")) == "pong b"

    assert len(instances) == 2
    assert instances[0].clock is instances[1].clock
    assert instances[0].session is not instances[1].session


async def test_event_and_stream_handlers_get_dependencies_too() -> None:
    got: list[object] = []

    async def on_happened(e: Happened, clock: Clock) -> None:
        got.append(clock)

    async def count(q: CountTo, session: Session) -> AsyncIterator[int]:
        got.append(session)
        yield 1

    async with app_with(on_happened, count, providers=[Deps()]).mediator() as m:
        await m.publish(Happened())
        assert [i async for i in m.stream(CountTo(upto=1))] == [1]

    assert [type(o) for o in got] == [Clock, Session]


async def test_call_info_is_injected_and_is_the_local_call_in_process() -> None:
    got: list[CallInfo] = []

    async def ping(cmd: Ping, call: CallInfo) -> str:
        got.append(call)
        got.append(current_call())
        return call.peer

    async with app_with(ping).mediator() as m:
        assert await m.send(Ping()) == "local"

    assert got == [CallInfo.local(), CallInfo.local()]
    assert (got[0].metadata, got[0].deadline, got[0].time_remaining()) == ({}, None, None)


async def test_call_info_can_be_injected_into_a_class_handler_constructor() -> None:
    class Who:
        def __init__(self, call: CallInfo) -> None:
            self.call = call

        async def handle(self, cmd: Ping) -> str:
            return self.call.peer

    async with app_with(Who).mediator() as m:
        assert await m.send(Ping()) == "local"


async def test_the_mediator_is_injected_so_a_handler_can_send_further_requests() -> None:
    seen: list[Mediator] = []

    async def add(q: Add) -> int:
        return q.a + q.b

    async def ping(cmd: Ping, mediator: Mediator) -> str:
        seen.append(mediator)
        return str(await mediator.send(Add(a=20, b=22)))

    class ViaClass:
        def __init__(self, mediator: Mediator) -> None:
            self.mediator = mediator

        async def handle(self, q: CountTo) -> AsyncIterator[int]:
            seen.append(self.mediator)
            yield await self.mediator.send(Add(a=q.upto, b=0))

    async with app_with(add, ping, ViaClass).mediator() as m:
        assert await m.send(Ping()) == "42"
        assert [i async for i in m.stream(CountTo(upto=5))] == [5]

    assert seen == [m, m]


def test_a_missing_dependency_is_a_configuration_error_when_the_mediator_is_built() -> None:
    class Unprovided:
        pass

    async def ping(cmd: Ping, thing: Unprovided) -> str:
        return ""

    app = app_with(ping, providers=[Deps()])

    with pytest.raises(ConfigurationError, match="dependency wiring is incomplete") as info:
        app.mediator()

    assert "Unprovided" in str(info.value)


def test_a_missing_constructor_dependency_of_a_class_handler_is_a_configuration_error() -> None:
    class Unprovided:
        pass

    class Needy:
        def __init__(self, thing: Unprovided) -> None:
            self.thing = thing

        async def handle(self, cmd: Ping) -> str:
            return ""

    app = app_with(Needy)

    with pytest.raises(ConfigurationError, match="dependency wiring is incomplete") as info:
        app.mediator()

    assert "Unprovided" in str(info.value)
