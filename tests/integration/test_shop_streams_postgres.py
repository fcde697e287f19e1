"""The shop's ImportOrders and WatchOrders on PostgreSQL, in-process.

An import is one transaction: its orders and their outbox rows commit
together (on PostgreSQL as the one statement of inserts the unit of work
writes), or, when one order is invalid, none of them. A watch reads the
statuses in short transactions of its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import Table, select

from examples.shop.app import app as shop_app
from examples.shop.orders.messages import (
    CancelOrder,
    LineItem,
    OrderStatus,
    PlaceOrder,
    WatchOrders,
)
from examples.shop.orders.store import orders as orders_table
from wirebus import InvalidArgument
from wirebus.db import Database, outbox_table

pytestmark = pytest.mark.integration

ITEM = LineItem(sku="book", quantity=2, price_cents=1250)


@pytest.fixture
async def database(pg_url: str) -> AsyncIterator[Database]:
    db = Database(pg_url, schema="migrate", extra_metadata=[orders_table.metadata])
    await db.start()
    yield db
    await db.close()


async def rows(db: Database, table: Table) -> list[Any]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(select(table))).mappings())


async def test_an_import_commits_every_order_with_its_outbox_row(database: Database) -> None:
    cmds = [PlaceOrder(customer_id=f"c{n}", items=(ITEM,)) for n in range(50)]
    async with shop_app.mediator(database=database, owns_database=False) as m:
        imported = await m.send_stream(PlaceOrder, cmds)
    assert imported.imported == 50
    assert {r["order_id"] for r in await rows(database, orders_table)} == set(imported.order_ids)
    keys = {r["key"].decode() for r in await rows(database, outbox_table)}
    assert keys == set(imported.order_ids)


async def test_an_import_with_an_invalid_order_commits_nothing(database: Database) -> None:
    too_big = LineItem(sku="gold", quantity=2**31 - 1, price_cents=2**62)  # total over int64
    cmds = [
        PlaceOrder(customer_id="ok", items=(ITEM,)),
        PlaceOrder(customer_id="x", items=(too_big,)),
    ]
    async with shop_app.mediator(database=database, owns_database=False) as m:
        with pytest.raises(InvalidArgument):
            await m.send_stream(PlaceOrder, cmds)
    assert await rows(database, orders_table) == []
    assert await rows(database, outbox_table) == []


async def test_a_watch_answers_the_current_status_of_each_order(database: Database) -> None:
    async with shop_app.mediator(database=database, owns_database=False) as m:
        kept = await m.send(PlaceOrder(customer_id="w", items=(ITEM,)))
        dropped = await m.send(PlaceOrder(customer_id="w", items=(ITEM,)))
        await m.send(CancelOrder(order_id=dropped.order_id))
        watch = [WatchOrders(order_id=kept.order_id), WatchOrders(order_id=dropped.order_id)]
        updates = [(u.order_id, u.status) async for u in m.bidi(WatchOrders, watch)]
    assert updates == [
        (kept.order_id, OrderStatus.PENDING),
        (dropped.order_id, OrderStatus.CANCELLED),
    ]
