"""An open circuit breaker through a real gateway on 127.0.0.1: UNAVAILABLE with RetryInfo.

A handler whose dependency is down fails until its breaker opens; from then
on a gRPC client gets UNAVAILABLE at once, with ``google.rpc.ErrorInfo``
(``CIRCUIT_OPEN``) and ``google.rpc.RetryInfo`` in ``grpc-status-details-bin``,
and the metrics endpoint says the breaker is open.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import grpc.aio
import pytest
from dishka import Provider, Scope, provide
from google.rpc import error_details_pb2, status_pb2
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

from tests.unit.test_metrics import free_port, scrape
from wirebus import App, CircuitBreaker, Router
from wirebus.gateway import GatewayConfig
from wirebus.runtime import Runtime
from wirebus.settings import Settings


class Warehouse:
    """The handler's dependency; it is down."""

    def __init__(self) -> None:
        self.calls = 0

    async def order(self, order_id: str) -> orders_pb2.Order:
        self.calls += 1
        raise ConnectionError("warehouse refused the connection")


class WarehouseProvider(Provider):
    def __init__(self, warehouse: Warehouse) -> None:
        super().__init__()
        self.warehouse = warehouse

    @provide(scope=Scope.APP)
    def provide_warehouse(self) -> Warehouse:
        return self.warehouse


def warehouse_app(warehouse: Warehouse) -> App:
    router = Router("orders")
    breaker = CircuitBreaker(failure_threshold=2, recovery_timeout=30, name="warehouse")

    @router.handler(breaker=breaker)
    async def get_order(request: orders_pb2.GetOrderRequest, stock: Warehouse) -> orders_pb2.Order:
        return await stock.order(request.order_id)

    return App(
        name="shop",
        services=[orders_pb2],
        routers=[router],
        providers=[WarehouseProvider(warehouse)],
        allow_unbound=True,
    )


def details_of(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    trailers = dict(error.trailing_metadata() or ())
    return status_pb2.Status.FromString(trailers["grpc-status-details-bin"])


async def test_an_open_breaker_answers_unavailable_with_retry_info_and_its_metric_says_open(
    tmp_path: Path,
) -> None:
    warehouse, port = Warehouse(), free_port()
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/breaker.db")
    app, config = warehouse_app(warehouse), GatewayConfig(port=0)
    async with Runtime(app, settings, gateway=config, relay=False, metrics_port=port) as runtime:
        assert runtime.gateway is not None
        async with grpc.aio.insecure_channel(runtime.gateway.address) as channel:
            stub = orders_pb2_grpc.OrderServiceStub(channel)
            request = orders_pb2.GetOrderRequest(order_id="o-1")
            failures = []
            for _ in range(3):
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await stub.GetOrder(request)
                failures.append(raised.value)
        values = await asyncio.to_thread(scrape, port)

    assert [f.code() for f in failures] == [grpc.StatusCode.UNAVAILABLE] * 3
    assert warehouse.calls == 2  # the third call failed fast, never reaching the warehouse
    info = error_details_pb2.ErrorInfo()
    assert details_of(failures[0]).details[0].Unpack(info)
    assert info.reason == "CONNECTION_LOST"

    status = details_of(failures[2])
    retry = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info)
    assert status.details[1].Unpack(retry)
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "CIRCUIT_OPEN",
        "shop",
        {"circuit": "warehouse"},
    )
    assert 25 < retry.retry_delay.ToNanoseconds() / 1e9 <= 30
    assert values['wirebus_circuit_breaker_state{breaker="warehouse"}'] == 2
    opened = 'wirebus_circuit_breaker_transitions_total{breaker="warehouse",state="open"}'
    assert values[opened] == 1
