"""A scripted gRPC client for the shop: every call a user can make, and its errors.

Any gRPC client works; this one uses the buf-generated Python stubs::

    python -m examples.shop.client 127.0.0.1:50051
"""

from __future__ import annotations

import asyncio
import sys

import grpc
import grpc.aio
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from shop.orders.v1 import orders_pb2, orders_pb2_grpc


def describe_error(err: grpc.aio.AioRpcError) -> str:
    """Render a status with its ``google.rpc`` details (BadRequest, ErrorInfo)."""
    parts = [f"{err.code().name}: {err.details()}"]
    for key, value in err.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        for detail in status_pb2.Status.FromString(value).details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                parts += [f"  field {v.field}: {v.description}" for v in bad.field_violations]
            elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                parts.append(f"  reason {info.reason} (domain {info.domain})")
    return "\n".join(parts)


async def _until_paid(
    orders: orders_pb2_grpc.OrderServiceStub, order_id: str, within: float = 10.0
) -> orders_pb2.Order:
    """GetOrder until the payments slice has captured the payment (events are asynchronous)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        order = await orders.GetOrder(orders_pb2.GetOrderRequest(order_id=order_id))
        if order.status == orders_pb2.ORDER_STATUS_PAID:
            return order
        if asyncio.get_running_loop().time() > deadline:
            return order
        await asyncio.sleep(0.05)


async def drive(address: str) -> int:
    """Run the script against ``address``; return the number of unexpected outcomes."""
    failures = 0
    metadata = (("x-correlation-id", "demo-0001"),)
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        status = await health.Check(
            health_pb2.HealthCheckRequest(service="shop.orders.v1.OrderService")
        )
        print(f"health: {health_pb2.HealthCheckResponse.ServingStatus.Name(status.status)}")
        orders = orders_pb2_grpc.OrderServiceStub(channel)
        placed = await orders.PlaceOrder(
            orders_pb2.PlaceOrderRequest(
                customer_id="alice",
                items=[
                    orders_pb2.LineItem(sku="book", quantity=2, price_cents=1250),
                    orders_pb2.LineItem(sku="pen", quantity=1, price_cents=199),
                ],
            ),
            metadata=metadata,
        )
        print(f"PlaceOrder -> order {placed.order_id}")
        order = await _until_paid(orders, placed.order_id)
        status_name = orders_pb2.OrderStatus.Name(order.status)
        print(
            f"GetOrder -> total {order.total_cents} cents, {status_name}"
            " (the payments slice captured it)"
        )
        failures += status_name != "ORDER_STATUS_PAID"
        second = await orders.PlaceOrder(
            orders_pb2.PlaceOrderRequest(
                customer_id="alice",
                items=[orders_pb2.LineItem(sku="mug", quantity=1, price_cents=800)],
            )
        )
        listed = [
            o.order_id
            async for o in orders.ListOrders(orders_pb2.ListOrdersRequest(customer_id="alice"))
        ]
        print(f"ListOrders(alice) streamed {len(listed)} orders")
        failures += listed != [placed.order_id, second.order_id]
        await orders.CancelOrder(
            orders_pb2.CancelOrderRequest(order_id=second.order_id, reason="changed mind")
        )
        print(f"CancelOrder {second.order_id} -> ok")

        expected_errors = [
            (
                "PlaceOrder with no items",
                orders.PlaceOrder(orders_pb2.PlaceOrderRequest(customer_id="bob")),
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
            (
                "PlaceOrder with quantity 0",
                orders.PlaceOrder(
                    orders_pb2.PlaceOrderRequest(
                        customer_id="bob",
                        items=[orders_pb2.LineItem(sku="x", quantity=0, price_cents=1)],
                    )
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
            (
                "GetOrder of an unknown id",
                orders.GetOrder(orders_pb2.GetOrderRequest(order_id="nope")),
                grpc.StatusCode.NOT_FOUND,
            ),
            (
                "CancelOrder twice",
                orders.CancelOrder(orders_pb2.CancelOrderRequest(order_id=second.order_id)),
                grpc.StatusCode.FAILED_PRECONDITION,
            ),
        ]
        for label, call, code in expected_errors:
            try:
                await call
            except grpc.aio.AioRpcError as err:
                print(f"{label} -> {describe_error(err)}")
                failures += err.code() != code
            else:
                print(f"{label} -> unexpectedly succeeded")
                failures += 1
        garbage = channel.unary_unary("/shop.orders.v1.OrderService/GetOrder")
        try:
            await garbage(b"\xff\xff\xff\xff")
        except grpc.aio.AioRpcError as err:
            print(f"GetOrder with garbage bytes -> {describe_error(err)}")
            failures += err.code() != grpc.StatusCode.INVALID_ARGUMENT
    return failures


def main() -> None:
    address = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"
    sys.exit(1 if asyncio.run(drive(address)) else 0)


if __name__ == "__main__":
    main()
