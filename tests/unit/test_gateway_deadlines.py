"""Deadlines and cancellation through a real gateway on 127.0.0.1 with a SQLite database.

The caller's deadline bounds the handler: when it passes the handler is
cancelled, its unit of work rolls back (no row, no outbox row) and the
caller gets DEADLINE_EXCEEDED. A call without a deadline is not treated as
expired. A client that cancels a call cancels the handler, which rolls back
too. An in-process ``mediator.send`` from a handler sees the same deadline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from shop.orders.v1 import orders_pb2, orders_pb2_grpc
from sqlalchemy import Column, MetaData, String, Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from wirebus import App, Context, Event, Query, Router, current_call
from wirebus.db import outbox_table
from wirebus.gateway import GatewayConfig
from wirebus.mediator import Mediator
from wirebus.runtime import Runtime
from wirebus.settings import Settings
from wirebus.testing import wait_until

metadata = MetaData()
notes = Table("deadline_notes", metadata, Column("order_id", String, primary_key=True))


class Placed(Event, proto=orders_pb2.OrderPlaced, key="order_id", topic="deadline-test"):
    order_id: str
    customer_id: str
    total_cents: int
    placed_at: dt.datetime


class Remaining(Query[float]):
    """Asked in-process by the slow handler: what deadline does the nested call see?"""


@dataclasses.dataclass
class Observed:
    entered: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    remaining: list[float | None] = dataclasses.field(default_factory=list)
    nested_remaining: list[float | None] = dataclasses.field(default_factory=list)


def slow_app(observed: Observed) -> App:
    """``PlaceOrder`` writes a row, emits an event, sends a query, waits ``customer_id`` s."""
    router = Router()

    @router.handler
    async def remaining(query: Remaining) -> float:
        left = current_call().time_remaining()
        observed.nested_remaining.append(left)
        return -1.0 if left is None else left

    @router.handler
    async def place(
        cmd: orders_pb2.PlaceOrderRequest, session: AsyncSession, ctx: Context, mediator: Mediator
    ) -> orders_pb2.PlaceOrderResponse:
        await session.execute(insert(notes).values(order_id="n-1"))
        ctx.emit(Placed(order_id="n-1", customer_id="c", total_cents=1, placed_at=_now()))
        observed.remaining.append(current_call().time_remaining())
        await mediator.send(Remaining())
        observed.entered.set()
        try:
            await asyncio.sleep(float(cmd.customer_id))
        except asyncio.CancelledError:
            observed.cancelled.set()
            raise
        return orders_pb2.PlaceOrderResponse(order_id="n-1")

    return App(
        name="deadlines",
        services=[orders_pb2],
        routers=[router],
        metadata=metadata,
        events=[Placed],
        allow_unbound=True,
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@pytest.fixture
def observed() -> Observed:
    return Observed()


@pytest.fixture
async def runtime(tmp_path: Path, observed: Observed) -> AsyncIterator[Runtime]:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/deadlines.db")
    config = GatewayConfig(port=0)
    async with Runtime(slow_app(observed), settings, gateway=config, relay=False) as runtime:
        yield runtime


@pytest.fixture
async def stub(runtime: Runtime) -> AsyncIterator[orders_pb2_grpc.OrderServiceStub]:
    assert runtime.gateway is not None
    async with grpc.aio.insecure_channel(runtime.gateway.address) as channel:
        yield orders_pb2_grpc.OrderServiceStub(channel)


async def rows(runtime: Runtime) -> tuple[int, int]:
    """(notes rows, outbox rows) committed in the database."""
    assert runtime.database is not None
    async with runtime.database.engine.connect() as conn:
        written = await conn.scalar(select(func.count()).select_from(notes))
        outbox = await conn.scalar(select(func.count()).select_from(outbox_table))
    return int(written or 0), int(outbox or 0)


def place(seconds: float) -> orders_pb2.PlaceOrderRequest:
    return orders_pb2.PlaceOrderRequest(customer_id=str(seconds))


async def test_a_passed_deadline_cancels_the_handler_and_rolls_back_its_unit_of_work(
    runtime: Runtime, stub: orders_pb2_grpc.OrderServiceStub, observed: Observed
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.PlaceOrder(place(30), timeout=0.5)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.wait_for(observed.cancelled.wait(), 5)  # the server did not wait 30 s
    assert runtime.gateway is not None
    await wait_until(lambda: runtime.gateway is not None and not runtime.gateway.calls_in_flight)
    assert await rows(runtime) == (0, 0)


async def test_the_handler_and_a_nested_send_see_the_callers_deadline(
    runtime: Runtime, stub: orders_pb2_grpc.OrderServiceStub, observed: Observed
) -> None:
    await stub.PlaceOrder(place(0), timeout=20)
    [outer], [nested] = observed.remaining, observed.nested_remaining
    assert outer is not None
    assert nested is not None
    assert 0 < nested <= outer <= 20
    assert await rows(runtime) == (1, 1)  # the call committed its row and its event


async def test_a_call_without_a_deadline_is_not_treated_as_expired(
    runtime: Runtime, stub: orders_pb2_grpc.OrderServiceStub, observed: Observed
) -> None:
    reply = await stub.PlaceOrder(place(0.2))  # no timeout: grpc's "infinite" remaining time
    assert reply.order_id == "n-1"
    assert observed.remaining == [None]
    assert observed.nested_remaining == [None]
    assert await rows(runtime) == (1, 1)


async def test_a_client_cancelling_the_call_cancels_the_handler_and_rolls_back(
    runtime: Runtime, stub: orders_pb2_grpc.OrderServiceStub, observed: Observed
) -> None:
    call = stub.PlaceOrder(place(30), timeout=60)
    await asyncio.wait_for(observed.entered.wait(), 10)  # the row is written, not committed
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.wait_for(observed.cancelled.wait(), 5)
    await wait_until(lambda: runtime.gateway is not None and not runtime.gateway.calls_in_flight)
    assert await rows(runtime) == (0, 0)
