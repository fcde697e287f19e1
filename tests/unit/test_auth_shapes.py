"""Authentication on all four RPC shapes, through a real gateway on 127.0.0.1.

The authentication stage runs once, at the call's start, from its metadata:
a call without credentials is UNAUTHENTICATED and one whose identity breaks
the method's rule PERMISSION_DENIED -- for a stream of requests before any
message is read (the clients below send none, and do not even close their
side) and before the handler runs. A call that passes reaches the handler
with its identity, for every item of a stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import grpc
import grpc.aio
import pytest
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

from wirebus import App, Router
from wirebus.auth import Authentication, Identity, StaticTokens, current_identity, require_scopes
from wirebus.testing import AppHarness

Stub = orders_pb2_grpc.OrderServiceStub
Metadata = tuple[tuple[str, str], ...]


def shapes_app(ran: list[str]) -> App:
    router = Router()

    @router.handler
    async def get_order(query: orders_pb2.GetOrderRequest) -> orders_pb2.Order:
        ran.append("unary")
        return orders_pb2.Order(order_id=query.order_id, customer_id=current_identity().subject)

    @router.handler
    async def list_orders(query: orders_pb2.ListOrdersRequest) -> AsyncIterator[orders_pb2.Order]:
        ran.append("server_stream")
        for _ in range(2):
            yield orders_pb2.Order(customer_id=current_identity().subject)

    @router.handler
    async def import_orders(
        cmds: AsyncIterator[orders_pb2.PlaceOrderRequest],
    ) -> orders_pb2.ImportOrdersResponse:
        ran.append("client_stream")
        names = [current_identity().subject async for _ in cmds]
        return orders_pb2.ImportOrdersResponse(imported=len(names), order_ids=names)

    @router.handler
    async def watch_orders(
        requests: AsyncIterator[orders_pb2.WatchOrdersRequest],
    ) -> AsyncIterator[orders_pb2.OrderStatusUpdate]:
        ran.append("bidi")
        async for _ in requests:
            yield orders_pb2.OrderStatusUpdate(order_id=current_identity().subject)

    auth = Authentication(
        StaticTokens(
            {
                "reader-token": Identity("reader", "bearer", scopes=frozenset({"orders:read"})),
                "nobody-token": Identity("nobody", "bearer"),
            }
        ),
        rules={"shop.orders.v1.OrderService/*": require_scopes("orders:read")},
    )
    return App(
        name="auth-shapes",
        services=[orders_pb2],
        routers=[router],
        authentication=auth,
        allow_unbound=True,  # PlaceOrder and CancelOrder: not needed here
    )


async def unary(stub: Stub, metadata: Metadata, send: bool) -> list[str]:
    order = await stub.GetOrder(orders_pb2.GetOrderRequest(order_id="o"), metadata=metadata)
    return [order.customer_id]


async def server_stream(stub: Stub, metadata: Metadata, send: bool) -> list[str]:
    request = orders_pb2.ListOrdersRequest(customer_id="c")
    return [o.customer_id async for o in stub.ListOrders(request, metadata=metadata)]


async def client_stream(stub: Stub, metadata: Metadata, send: bool) -> list[str]:
    call = stub.ImportOrders(metadata=metadata)
    if send:  # otherwise: no message, and the client's side stays open
        await call.write(orders_pb2.PlaceOrderRequest(customer_id="c"))
        await call.done_writing()
    return list((await call).order_ids)


async def bidi(stub: Stub, metadata: Metadata, send: bool) -> list[str]:
    call = stub.WatchOrders(metadata=metadata)
    if not send:
        await call.read()  # raises the call's status
        raise AssertionError("the call was expected to fail")
    await call.write(orders_pb2.WatchOrdersRequest(order_id="o"))
    first = await call.read()
    await call.done_writing()
    assert await call.read() == grpc.aio.EOF
    return [first.order_id]


Shape = Callable[[Stub, Metadata, bool], Coroutine[Any, Any, list[str]]]
SHAPES: dict[str, Shape] = {
    "unary": unary,
    "server_stream": server_stream,
    "client_stream": client_stream,
    "bidi": bidi,
}


@pytest.fixture
async def served() -> AsyncIterator[tuple[Stub, list[str]]]:
    ran: list[str] = []
    async with AppHarness(shapes_app(ran)) as harness:
        yield orders_pb2_grpc.OrderServiceStub(await harness.channel()), ran


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    ("metadata", "code"),
    [
        ((), grpc.StatusCode.UNAUTHENTICATED),
        (bearer("a-guess"), grpc.StatusCode.UNAUTHENTICATED),
        (bearer("nobody-token"), grpc.StatusCode.PERMISSION_DENIED),
    ],
    ids=["no credentials", "a bad token", "a missing scope"],
)
async def test_a_refused_caller_is_stopped_before_the_handler_on_every_shape(
    served: tuple[Stub, list[str]], shape: str, metadata: Metadata, code: grpc.StatusCode
) -> None:
    stub, ran = served
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await SHAPES[shape](stub, metadata, False)
    assert caught.value.code() == code
    assert ran == []


@pytest.mark.parametrize("shape", SHAPES)
async def test_an_allowed_caller_reaches_the_handler_with_its_identity_on_every_shape(
    served: tuple[Stub, list[str]], shape: str
) -> None:
    stub, ran = served
    subjects = await SHAPES[shape](stub, bearer("reader-token"), True)
    assert subjects
    assert set(subjects) == {"reader"}
    assert ran == [shape]
