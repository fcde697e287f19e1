"""Handlers taking a stream of messages, registered and run in-process.

A first parameter annotated ``AsyncIterator[X]`` (or ``AsyncIterable[X]``)
makes a client-streaming handler (a coroutine function: one result) or a
bidirectional one (an async generator). The mediator runs them with
``send_stream`` and ``bidi``; behaviours wrap the whole call and get its
``MessageStream``; validation checks each message as the handler reads it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import pytest
from shop.orders.v1 import orders_pb2

from wirebus import App, ConfigurationError, Context, Event, InvalidArgument, Router, Validation
from wirebus.errors import HandlerNotFound
from wirebus.pipeline import CallNext, MessageStream

ITEM = orders_pb2.LineItem(sku="s", quantity=1, price_cents=1)


class Counted(Event):
    n: int


def order(name: str) -> orders_pb2.PlaceOrderRequest:
    return orders_pb2.PlaceOrderRequest(customer_id=name, items=[ITEM])


def shapes_router(seen: list[str]) -> Router:
    router = Router("shapes")

    @router.handler
    async def count(
        cmds: AsyncIterator[orders_pb2.PlaceOrderRequest], ctx: Context
    ) -> orders_pb2.ImportOrdersResponse:
        names = [cmd.customer_id async for cmd in cmds]
        seen.extend(names)
        ctx.emit(Counted(n=len(names)))
        return orders_pb2.ImportOrdersResponse(imported=len(names), order_ids=names)

    @router.handler
    class Echo:
        async def handle(
            self, requests: AsyncIterable[orders_pb2.WatchOrdersRequest]
        ) -> AsyncIterator[orders_pb2.OrderStatusUpdate]:
            try:
                async for request in requests:
                    yield orders_pb2.OrderStatusUpdate(order_id=request.order_id)
            finally:
                seen.append("echo closed")

    return router


def test_the_shape_of_a_handler_is_read_from_its_first_parameter_and_its_kind_of_function() -> None:
    router = shapes_router([])
    kinds = {spec.name.rsplit(".", 1)[-1]: spec.kind for spec in router.specs}
    assert kinds == {"count": "client_stream", "Echo": "bidi"}
    assert [spec.message_type for spec in router.specs] == [
        orders_pb2.PlaceOrderRequest,
        orders_pb2.WatchOrdersRequest,
    ]
    assert all(spec.params.streams_in for spec in router.specs)


def test_an_event_handler_cannot_take_a_stream() -> None:
    router = Router()
    with pytest.raises(ConfigurationError, match="takes one event, not a stream"):

        @router.handler
        async def on_counted(events: AsyncIterator[Counted]) -> None: ...


def test_a_message_and_a_stream_of_it_may_each_have_one_handler_but_not_two() -> None:
    router = shapes_router([])

    @router.handler
    async def place(cmd: orders_pb2.PlaceOrderRequest) -> orders_pb2.PlaceOrderResponse:
        return orders_pb2.PlaceOrderResponse()

    App(routers=[router]).check()  # PlaceOrder's request handler and a client stream of it

    @router.handler
    async def count_again(
        cmds: AsyncIterator[orders_pb2.PlaceOrderRequest],
    ) -> orders_pb2.ImportOrdersResponse:
        return orders_pb2.ImportOrdersResponse()

    with pytest.raises(ConfigurationError, match="PlaceOrderRequest has two handlers"):
        App(routers=[router]).check()


def test_describe_shows_the_shape_of_each_method_and_handler() -> None:
    text = App(name="d", services=[orders_pb2], routers=[shapes_router([])], allow_unbound=True)
    described = text.describe()
    assert "/shop.orders.v1.OrderService/ImportOrders [stream_unary] -> " in described
    assert "/shop.orders.v1.OrderService/WatchOrders [stream_stream] -> " in described
    assert "PlaceOrderRequest [client_stream]" in described
    assert "WatchOrdersRequest [bidi]" in described


async def test_send_stream_gives_the_handler_the_messages_and_returns_its_one_result() -> None:
    seen: list[str] = []
    handled: list[Counted] = []
    router = shapes_router(seen)

    @router.handler
    async def on_counted(event: Counted) -> None:
        handled.append(event)

    async def messages() -> AsyncIterator[orders_pb2.PlaceOrderRequest]:
        for name in ("a", "b"):
            yield order(name)

    async with App(routers=[router]).mediator() as mediator:
        from_list = await mediator.send_stream(orders_pb2.PlaceOrderRequest, [order("x")])
        from_generator = await mediator.send_stream(orders_pb2.PlaceOrderRequest, messages())
    assert list(from_list.order_ids) == ["x"]
    assert list(from_generator.order_ids) == ["a", "b"]
    assert [e.n for e in handled] == [1, 2]  # what it emitted left once it returned


async def test_bidi_yields_the_handlers_items_and_closing_early_closes_its_generator() -> None:
    seen: list[str] = []
    async with App(routers=[shapes_router(seen)]).mediator() as mediator:
        requests = [orders_pb2.WatchOrdersRequest(order_id=n) for n in ("a", "b", "c")]
        answers = [u.order_id async for u in mediator.bidi(orders_pb2.WatchOrdersRequest, requests)]
        assert answers == ["a", "b", "c"]
        assert seen == ["echo closed"]
        stream = mediator.bidi(orders_pb2.WatchOrdersRequest, requests)
        assert (await anext(stream)).order_id == "a"
        await stream.aclose()  # the caller leaves after one item
    assert seen == ["echo closed", "echo closed"]


async def test_a_stream_without_a_handler_is_handler_not_found() -> None:
    async with App(routers=[Router()]).mediator() as mediator:
        with pytest.raises(HandlerNotFound, match="AsyncIterator\\[PlaceOrderRequest\\]"):
            await mediator.send_stream(orders_pb2.PlaceOrderRequest, [])
        with pytest.raises(HandlerNotFound, match="no bidirectional handler"):
            await anext(mediator.bidi(orders_pb2.WatchOrdersRequest, []))


async def test_a_behaviour_wraps_the_whole_call_and_gets_the_calls_message_stream() -> None:
    log: list[str] = []

    async def around(message: Any, call_next: CallNext) -> Any:
        assert isinstance(message, MessageStream)
        log.append(f"start {message.message_type.__name__}")
        try:
            return await call_next(message)
        finally:
            log.append("end")

    seen: list[str] = []

    async def requests() -> AsyncIterator[orders_pb2.WatchOrdersRequest]:
        for name in ("a", "b"):
            log.append(f"sent {name}")
            yield orders_pb2.WatchOrdersRequest(order_id=name)

    app = App(routers=[shapes_router(seen)], behaviours=[around])
    async with app.mediator() as mediator:
        await mediator.send_stream(orders_pb2.PlaceOrderRequest, [order("a")])
        async for update in mediator.bidi(orders_pb2.WatchOrdersRequest, requests()):
            log.append(f"got {update.order_id}")
    assert log[:4] == ["start PlaceOrderRequest", "end", "start WatchOrdersRequest", "sent a"]
    rest = log[4:]  # the handler runs one item ahead of the caller, so these interleave
    assert sorted(rest) == ["end", "got a", "got b", "sent b"]
    assert rest.index("end") > rest.index("sent b")  # the behaviour spans the whole stream


async def test_validation_checks_each_message_as_the_handler_reads_it() -> None:
    seen: list[str] = []
    read: list[str] = []

    async def messages() -> AsyncIterator[orders_pb2.PlaceOrderRequest]:
        for request in (order("a"), orders_pb2.PlaceOrderRequest(customer_id="b"), order("c")):
            read.append(request.customer_id)
            yield request

    app = App(routers=[shapes_router(seen)], validation=Validation())
    async with app.mediator() as mediator:
        with pytest.raises(InvalidArgument) as caught:
            await mediator.send_stream(orders_pb2.PlaceOrderRequest, messages())
    assert [v.field for v in caught.value.violations] == ["items"]
    assert read == ["a", "b"]  # "c" was never read
    assert seen == []  # the handler did not get to return


async def test_a_message_stream_reads_its_source_only_when_asked() -> None:
    pulled: list[int] = []

    async def source() -> AsyncIterator[int]:
        for n in range(3):
            pulled.append(n)
            yield n

    stream = MessageStream(int, source())
    checked: list[int] = []
    stream.check_each(checked.append)
    assert await anext(stream) == 0
    assert pulled == [0]  # nothing read ahead
    assert checked == [0]
    await stream.aclose()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(stream), 1)
