"""The unit of work on PostgreSQL: rows added with ``UnitOfWork.insert`` and outbox rows.

A call that only inserts commits as one statement; one that also uses the
session commits through it. Either way its rows and its outbox rows commit
together, or neither does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
from shop.orders.v1 import orders_pb2
from sqlalchemy import Column, Integer, MetaData, String, Table, func, literal_column, select

from examples.shop.app import app as shop_app
from examples.shop.orders.messages import LineItem, PlaceOrder
from examples.shop.orders.store import orders as orders_table
from wirebus import App, Command, Context, Event, Router
from wirebus.db import Database, outbox_table
from wirebus.outbox.rows import unpack_headers
from wirebus.outbox.uow import UnitOfWork

pytestmark = pytest.mark.integration

NOW = dt.datetime(2025, 3, 4, 5, 6, 7, tzinfo=dt.UTC)

state = MetaData()
notes = Table(
    "it_uow_notes",
    state,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("text", String(100), nullable=False, unique=True),
)


class Placed(Event, proto=orders_pb2.OrderPlaced, key="order_id", topic="it.uow.v1"):
    order_id: str
    customer_id: str
    total_cents: int
    placed_at: dt.datetime


class Note(Command[int]):
    texts: tuple[str, ...]
    events: int = 1
    read_first: bool = False


def notes_app() -> App:
    router = Router("notes")

    @router.handler
    async def note(cmd: Note, uow: UnitOfWork, ctx: Context) -> int:
        if cmd.read_first:
            await uow.session.execute(select(notes.c.id))
        for text in cmd.texts:
            await uow.insert(notes, {"text": text})
        for i in range(cmd.events):
            ctx.emit(Placed(order_id=f"o-{i}", customer_id="c", total_cents=i, placed_at=NOW))
        return len(cmd.texts)

    return App(name="notes", routers=[router], events=[Placed], metadata=state)


@pytest.fixture
async def database(pg_url: str) -> AsyncIterator[Database]:
    db = Database(pg_url, schema="migrate", extra_metadata=[state, orders_table.metadata])
    await db.start()
    yield db
    await db.close()


async def rows(db: Database, table: Table) -> list[Any]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(select(table).order_by(table.c[0].name))).mappings())


async def test_a_placed_order_and_its_three_outbox_rows_commit_together(
    database: Database,
) -> None:
    async with shop_app.mediator(database=database, owns_database=False) as m:
        item = LineItem(sku="book", quantity=2, price_cents=1250)
        ref = await m.send(PlaceOrder(customer_id="c1", items=(item,)))

    (order,) = await rows(database, orders_table)
    outbox = await rows(database, outbox_table)
    assert (order["order_id"], order["total_cents"]) == (ref.order_id, 2500)
    # The fact, then the notification and the snapshot of the new order, none relayed yet.
    assert [(r["topic"], _ce_type(r), r["key"], r["status"]) for r in outbox] == [
        ("shop.orders.v1", "shop.orders.v1.OrderPlaced", ref.order_id.encode(), "pending"),
        (
            "shop.orders.v1.notifications",
            "shop.orders.v1.OrderStatusChanged",
            ref.order_id.encode(),
            "pending",
        ),
        (
            "shop.orders.v1.snapshots",
            "shop.orders.v1.OrderSnapshot",
            ref.order_id.encode(),
            "pending",
        ),
    ]
    # One transaction wrote them all: PostgreSQL stamps each row with its writer's xid.
    assert await writers(database, orders_table) == await writers(database, outbox_table)
    assert len(await writers(database, outbox_table)) == 1


def _ce_type(row: Any) -> str:
    return dict(unpack_headers(row["headers"]))["ce_type"].decode()


async def writers(db: Database, table: Table) -> set[str]:
    """The ids of the transactions that wrote the rows of ``table`` (PostgreSQL's ``xmin``)."""
    async with db.engine.connect() as conn:
        return set(
            (await conn.execute(select(literal_column("xmin::text")).select_from(table))).scalars()
        )


async def test_inserted_rows_and_events_keep_their_order(database: Database) -> None:
    async with notes_app().mediator(database=database, owns_database=False) as m:
        assert await m.send(Note(texts=("a", "b", "c"), events=3)) == 3

    assert [r["text"] for r in await rows(database, notes)] == ["a", "b", "c"]
    assert [r["key"] for r in await rows(database, outbox_table)] == [b"o-0", b"o-1", b"o-2"]


async def test_a_failing_insert_persists_neither_rows_nor_outbox_rows(database: Database) -> None:
    async with notes_app().mediator(database=database, owns_database=False) as m:
        await m.send(Note(texts=("taken",), events=0))
        with pytest.raises(Exception, match="unique"):
            await m.send(Note(texts=("fresh", "taken"), events=2))  # the second row violates
        assert await m.send(Note(texts=("after",), events=1)) == 1  # the pool is still usable

    assert [r["text"] for r in await rows(database, notes)] == ["taken", "after"]
    assert [r["key"] for r in await rows(database, outbox_table)] == [b"o-0"]


async def test_rows_inserted_after_the_session_opened_commit_through_it(
    database: Database,
) -> None:
    async with notes_app().mediator(database=database, owns_database=False) as m:
        await m.send(Note(texts=("x", "y"), events=1, read_first=True))

    assert [r["text"] for r in await rows(database, notes)] == ["x", "y"]
    async with database.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(outbox_table))).scalar() == 1


async def test_rows_of_one_table_with_different_columns_commit_in_order(
    database: Database,
) -> None:
    router = Router("mixed")

    @router.handler
    async def mixed(cmd: Note, uow: UnitOfWork) -> int:
        await uow.insert(notes, {"text": cmd.texts[0]})
        await uow.insert(notes, {"id": 100, "text": cmd.texts[1]})
        return 2

    app = App(name="mixed", routers=[router], metadata=state)
    async with app.mediator(database=database, owns_database=False) as m:
        await m.send(Note(texts=("first", "second")))

    assert [(r["id"], r["text"]) for r in await rows(database, notes)] == [
        (1, "first"),
        (100, "second"),
    ]


async def test_each_call_is_its_own_transaction(database: Database) -> None:
    async with notes_app().mediator(database=database, owns_database=False) as m:
        for i in range(5):
            await m.send(Note(texts=(f"n{i}",), events=1))

    assert len(await rows(database, notes)) == 5
    assert len(await rows(database, outbox_table)) == 5
