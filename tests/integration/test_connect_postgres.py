"""The Connect port on PostgreSQL and Kafka: a call's events leave through the outbox, a
call past its ``Connect-Timeout-Ms`` commits nothing.

The runtime runs as ``wirebus run --connect-port`` does, on the real PostgreSQL and
Kafka of ``scripts/services`` (a fresh database, a fresh topic).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest
from shop.orders.v1 import orders_pb2
from sqlalchemy import func, select

from tests.integration.conftest import read_records
from tests.unit._connect import request
from wirebus import App, Context, Event, Router
from wirebus.connect import ConnectConfig
from wirebus.db import outbox_table
from wirebus.runtime import Runtime
from wirebus.settings import Settings

pytestmark = pytest.mark.integration

SERVICE = "/shop.orders.v1.OrderService"


def connect_app(topic: str) -> App:
    """PlaceOrder emits OrderPlaced on ``topic``; a customer named ``slow`` waits 30 s first."""

    class Placed(Event, proto=orders_pb2.OrderPlaced, key="order_id", topic=topic):
        order_id: str
        customer_id: str
        total_cents: int
        placed_at: dt.datetime

    router = Router("connect")

    @router.handler
    async def place(
        cmd: orders_pb2.PlaceOrderRequest, ctx: Context
    ) -> orders_pb2.PlaceOrderResponse:
        order_id = f"o-{cmd.customer_id}"
        ctx.emit(Placed(order_id=order_id, customer_id=cmd.customer_id, total_cents=1,
                        placed_at=dt.datetime.now(dt.UTC)))  # fmt: skip
        if cmd.customer_id == "slow":
            await asyncio.sleep(30)
        return orders_pb2.PlaceOrderResponse(order_id=order_id)

    return App(
        name="connect-it", services=[orders_pb2], routers=[router], events=[Placed],
        allow_unbound=True,
    )  # fmt: skip


def body(customer: str) -> bytes:
    return json.dumps({"customerId": customer, "items": [{"sku": "s", "quantity": 1}]}).encode()


async def test_a_connect_calls_event_reaches_kafka_and_a_timed_out_call_commits_nothing(
    pg_url: str, bootstrap: str, fresh: str
) -> None:
    settings = Settings(database_url=pg_url, kafka_bootstrap=bootstrap)
    config = ConnectConfig(port=0, grace_seconds=2.0)
    async with Runtime(connect_app(fresh), settings, connect=config) as runtime:
        assert runtime.connect is not None
        assert runtime.database is not None
        url = runtime.connect.url + SERVICE + "/PlaceOrder"
        slow = await request(url, body("slow"), headers={"Connect-Timeout-Ms": "300"})
        assert (slow.status, slow.json()["code"]) == (504, "deadline_exceeded")
        placed = await request(url, body("alice"))
        assert placed.json() == {"orderId": "o-alice"}
        [record] = await read_records(bootstrap, fresh, 1, within=60, grace=2.0)
        async with runtime.database.engine.connect() as conn:
            rows = (await conn.execute(select(func.count()).select_from(outbox_table))).scalar()
    assert record.key == b"o-alice"
    assert orders_pb2.OrderPlaced.FromString(record.value).customer_id == "alice"
    assert rows == 0  # published and removed; the slow call's row was never committed
