"""On PostgreSQL, a value the database refuses is INVALID_ARGUMENT with one log line.

A NUL byte, a customer_id over its column's 255 characters and an integer
over int64 each make PostgreSQL (or asyncpg, for the integer) raise a data
error. Through a real gateway, whether the handler's own statement raised it
or the commit did (the one-statement insert, which runs on asyncpg
directly), the caller gets INVALID_ARGUMENT with ErrorInfo ``DATA_REJECTED``,
no SQL, and the server logs one warning line without a traceback. The shop
decides the same limits itself, before its handler writes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
from shop.orders.v1 import orders_pb2, orders_pb2_grpc
from sqlalchemy import func, select

from examples.shop.app import app as shop_app
from examples.shop.orders.store import orders as orders_table
from tests.conftest import bad_request
from tests.unit.test_data_errors import (
    INT64_MAX,
    assert_rejected_with_one_line,
    book,
    ledger,
    ledger_app,
)
from wirebus import Gateway, GatewayConfig
from wirebus.db import Database, outbox_table

pytestmark = pytest.mark.integration

REFUSED = {
    "a NUL byte": ("al\x00ice", 1),
    "256 characters": ("c" * 256, 1),
    "a total over int64": ("alice", INT64_MAX, 1),
}


@pytest.fixture
async def database(pg_url: str) -> AsyncIterator[Database]:
    db = Database(pg_url, schema="migrate", extra_metadata=[ledger.metadata, orders_table.metadata])
    await db.start()
    yield db
    await db.close()


async def count(database: Database, table) -> int:
    async with database.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(table))).scalar_one()


@pytest.mark.parametrize("via", ["insert", "session"])
@pytest.mark.parametrize("values", list(REFUSED.values()), ids=list(REFUSED))
async def test_a_value_postgres_refuses_is_invalid_argument_with_one_log_line(
    database: Database, caplog, values: tuple, via: str
) -> None:
    app = ledger_app()
    async with app.mediator(database=database, owns_database=False) as mediator:
        config = GatewayConfig(host="127.0.0.1", port=0, grace_seconds=1.0)
        async with (
            Gateway(app, config, mediator=mediator) as gateway,
            grpc.aio.insecure_channel(gateway.address) as channel,
        ):
            stub = orders_pb2_grpc.OrderServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.PlaceOrder(book(*values, via=via))
            assert_rejected_with_one_line(caught.value, caplog)
            assert (await stub.PlaceOrder(book("alice", 5, via=via))).order_id == "booked"
    assert await count(database, ledger) == 1  # the refused call wrote nothing


@pytest.mark.parametrize("values", list(REFUSED.values()), ids=list(REFUSED))
async def test_the_shop_refuses_those_values_before_it_writes(
    database: Database, caplog, values: tuple
) -> None:
    customer_id, *prices = values
    items = [orders_pb2.LineItem(sku="book", quantity=1, price_cents=p) for p in prices]
    async with shop_app.mediator(database=database, owns_database=False) as mediator:
        config = GatewayConfig(host="127.0.0.1", port=0, grace_seconds=1.0)
        async with (
            Gateway(shop_app, config, mediator=mediator) as gateway,
            grpc.aio.insecure_channel(gateway.address) as channel,
        ):
            stub = orders_pb2_grpc.OrderServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.PlaceOrder(
                    orders_pb2.PlaceOrderRequest(customer_id=customer_id, items=items)
                )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(bad_request(caught.value).field_violations) == 1
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert await count(database, orders_table) == await count(database, outbox_table) == 0
