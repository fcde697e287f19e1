"""The unit of work: a handler's state and its outbox rows commit together, or neither.

Each test runs on its own SQLite file under ``tmp_path`` with an explicit
``Database``, so the mediator is transactional and the outbox is on.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest
from shop.orders.v1 import orders_pb2
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from examples.shop.app import app as shop_app
from examples.shop.orders.messages import LineItem, PlaceOrder
from examples.shop.orders.store import metadata as orders_metadata
from examples.shop.orders.store import orders as orders_table
from wirebus import App, Command, Context, Event, Router
from wirebus.brokers.memory import InMemoryBroker
from wirebus.db import Database, inbox_table, outbox_table
from wirebus.inbox import InboxClaim
from wirebus.outbox import Relay
from wirebus.outbox.rows import unpack_headers

NOW = dt.datetime(2025, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
TOPIC = "test.uow.v1"

state = MetaData()
notes = Table(
    "test_notes",
    state,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("text", String(100), nullable=False),
)


class Placed(Event, proto=orders_pb2.OrderPlaced, key="order_id", topic=TOPIC):
    order_id: str
    customer_id: str
    total_cents: int
    placed_at: dt.datetime


class Noted(Event):
    """Not bound to protobuf: never travels, handled in-process after the commit."""

    text: str


class Write(Command[str]):
    text: str
    order_id: str = "o-1"
    fail: bool = False
    local: bool = False


class Boom(Exception):
    pass


class Consumed(Event):
    """An event a consumer hands to its one handler, with the inbox claim."""

    text: str
    fail: bool = False


def placed(order_id: str) -> Placed:
    return Placed(order_id=order_id, customer_id="c-1", total_cents=1250, placed_at=NOW)


def database(tmp_path: Path, *extra: MetaData) -> Database:
    return Database(
        f"sqlite+aiosqlite:///{tmp_path}/uow.db",
        create_schema=True,
        extra_metadata=list(extra) or [state],
    )


def notes_app(seen: list[Any]) -> App:
    router = Router("notes")

    @router.handler
    async def write(cmd: Write, session: AsyncSession, ctx: Context) -> str:
        await session.execute(insert(notes).values(text=cmd.text))
        ctx.emit(placed(cmd.order_id))
        if cmd.local:
            ctx.emit(Noted(text=cmd.text))
        if cmd.fail:
            raise Boom("after writing and emitting")
        return cmd.text

    @router.handler
    async def on_consumed(event: Consumed, session: AsyncSession, ctx: Context) -> None:
        await session.execute(insert(notes).values(text=event.text))
        ctx.emit(placed("o-consumed"))
        if event.fail:
            raise Boom("after writing and emitting")

    @router.handler
    async def on_noted(event: Noted, session: AsyncSession) -> None:
        # runs after the request committed: its state row is visible here
        rows = (await session.execute(select(notes.c.text))).scalars().all()
        seen.append((event, list(rows)))

    return App(name="notes", routers=[router], events=[Placed], metadata=state)


async def all_rows(db: Database, table: Table) -> list[Any]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(select(table))).mappings().all())


async def test_state_and_outbox_row_commit_together(tmp_path: Path) -> None:
    db = database(tmp_path)
    app = notes_app([])
    async with app.mediator(database=db) as mediator:
        assert await mediator.send(Write(text="hello", order_id="o-7")) == "hello"

        assert [r["text"] for r in await all_rows(db, notes)] == ["hello"]
        rows = await all_rows(db, outbox_table)
        assert len(rows) == 1
        row = rows[0]
        assert row["status"] == "pending"
        assert row["attempts"] == 0
        assert row["last_error"] is None
        assert row["published_at"] is None
        assert row["topic"] == TOPIC
        assert row["key"] == b"o-7"
        message = orders_pb2.OrderPlaced.FromString(row["value"])
        assert message.order_id == "o-7"
        assert message.customer_id == "c-1"
        assert message.total_cents == 1250
        assert message.placed_at.ToDatetime(dt.UTC) == NOW
        assert row["value"] == app.registry().by_type(Placed).encode(placed("o-7"))

        headers = {k: v.decode() for k, v in unpack_headers(row["headers"])}
        assert headers["ce_specversion"] == "1.0"
        assert headers["ce_type"] == "shop.orders.v1.OrderPlaced"
        assert headers["ce_source"] == "notes"
        assert headers["ce_dataschema"] == "type.googleapis.com/shop.orders.v1.OrderPlaced"
        assert headers["content-type"] == "application/protobuf"
        assert headers["ce_time"]
        assert headers["ce_id"] == row["event_id"]
        assert uuid.UUID(row["event_id"]).version == 4


async def test_the_relay_publishes_the_stored_ce_id_and_bytes(tmp_path: Path) -> None:
    db = database(tmp_path)
    app = notes_app([])
    broker = InMemoryBroker()
    async with app.mediator(database=db) as mediator:
        await mediator.send(Write(text="a", order_id="o-1"))
        await mediator.send(Write(text="b", order_id="o-2"))
        stored = await all_rows(db, outbox_table)

        async with Relay(db, broker.publisher(app.registry(), source="other")) as relay:
            assert await relay.relay_once() == 2

        published = broker.records(TOPIC)
        assert sorted(r.header("ce_id").decode() for r in published) == sorted(
            r["event_id"] for r in stored
        )
        by_id = {r.header("ce_id").decode(): r for r in published}
        for row in stored:
            record = by_id[row["event_id"]]
            assert record.value == row["value"]
            assert record.key == row["key"]
            assert record.headers == unpack_headers(row["headers"])
            # encoded at commit time by the app, not re-encoded by the relay's publisher
            assert record.header("ce_source") == b"notes"
        assert await all_rows(db, outbox_table) == []


async def test_a_handler_that_raises_persists_neither_state_nor_outbox(tmp_path: Path) -> None:
    db = database(tmp_path)
    seen: list[Any] = []
    async with notes_app(seen).mediator(database=db) as mediator:
        with pytest.raises(Boom, match="after writing and emitting"):
            await mediator.send(Write(text="doomed", fail=True, local=True))

        assert await all_rows(db, notes) == []
        assert await all_rows(db, outbox_table) == []
        assert seen == []  # nothing emitted by a failed request is dispatched

        # the mediator and the database are still usable afterwards
        await mediator.send(Write(text="fine"))
        assert [r["text"] for r in await all_rows(db, notes)] == ["fine"]
        assert len(await all_rows(db, outbox_table)) == 1


async def test_unregistered_events_are_dispatched_in_process_after_the_commit(
    tmp_path: Path,
) -> None:
    db = database(tmp_path)
    seen: list[Any] = []
    async with notes_app(seen).mediator(database=db) as mediator:
        await mediator.send(Write(text="local", local=True))

        assert seen == [(Noted(text="local"), ["local"])]
        rows = await all_rows(db, outbox_table)
        assert [r["topic"] for r in rows] == [TOPIC]  # only the protobuf event is an outbox row


async def test_a_handler_without_events_commits_its_state(tmp_path: Path) -> None:
    class Rename(Command[None]):
        text: str

    router = Router("plain")

    @router.handler
    async def rename(cmd: Rename, session: AsyncSession) -> None:
        await session.execute(insert(notes).values(text=cmd.text))

    db = database(tmp_path)
    async with App(routers=[router], metadata=state).mediator(database=db) as mediator:
        await mediator.send(Rename(text="x"))
        assert [r["text"] for r in await all_rows(db, notes)] == ["x"]
        assert await all_rows(db, outbox_table) == []


async def test_without_an_explicit_database_there_is_no_outbox() -> None:
    seen: list[Any] = []
    broker = InMemoryBroker()
    app = notes_app(seen)
    async with app.mediator(publisher=broker.publisher(app.registry(), source="notes")) as m:
        await m.send(Write(text="direct", order_id="o-9", local=True))
        # on the broker as soon as send returned: published directly, no relay behind it
        assert [r.key for r in broker.records(TOPIC)] == [b"o-9"]
        assert seen == [(Noted(text="direct"), ["direct"])]


async def test_the_shop_places_an_order_row_and_an_order_placed_outbox_row(
    tmp_path: Path,
) -> None:
    db = database(tmp_path, orders_metadata)
    async with shop_app.mediator(database=db) as mediator:
        ref = await mediator.send(
            PlaceOrder(
                customer_id="c-42", items=(LineItem(sku="sku-1", quantity=2, price_cents=300),)
            )
        )

        orders = await all_rows(db, orders_table)
        assert [(o["order_id"], o["customer_id"], o["total_cents"]) for o in orders] == [
            (ref.order_id, "c-42", 600)
        ]
        rows = await all_rows(db, outbox_table)
        # with the order's first status change: its notification and its snapshot
        assert [r["topic"] for r in rows] == [
            "shop.orders.v1",
            "shop.orders.v1.notifications",
            "shop.orders.v1.snapshots",
        ]
        assert {r["key"] for r in rows} == {ref.order_id.encode()}
        row = rows[0]
        assert row["topic"] == "shop.orders.v1"
        assert row["key"] == ref.order_id.encode()
        assert dict(unpack_headers(row["headers"]))["ce_type"] == b"shop.orders.v1.OrderPlaced"
        message = orders_pb2.OrderPlaced.FromString(row["value"])
        assert (message.order_id, message.customer_id, message.total_cents) == (
            ref.order_id,
            "c-42",
            600,
        )


async def test_an_inbox_claim_is_written_in_the_same_commit(tmp_path: Path) -> None:
    db = database(tmp_path)
    async with notes_app([]).mediator(database=db) as mediator:
        [(_, _, run)] = mediator.event_handlers(Consumed)
        claim = InboxClaim("payments", "event-1")
        assert await run(Consumed(text="claimed"), claim) == []

        assert claim.written
        inbox = await all_rows(db, inbox_table)
        assert [(r["consumer_group"], r["event_id"]) for r in inbox] == [("payments", "event-1")]
        assert len(await all_rows(db, outbox_table)) == 1
        assert len(await all_rows(db, notes)) == 1


async def test_an_inbox_claim_of_a_failed_handler_is_not_written(tmp_path: Path) -> None:
    db = database(tmp_path)
    async with notes_app([]).mediator(database=db) as mediator:
        [(_, _, run)] = mediator.event_handlers(Consumed)
        claim = InboxClaim("payments", "event-2")
        with pytest.raises(Boom):
            await run(Consumed(text="doomed", fail=True), claim)

        assert not claim.written
        assert await all_rows(db, inbox_table) == []
        assert await all_rows(db, notes) == []
        assert await all_rows(db, outbox_table) == []


async def test_each_request_gets_its_own_transaction(tmp_path: Path) -> None:
    db = database(tmp_path)
    async with notes_app([]).mediator(database=db) as mediator:
        for i in range(5):
            await mediator.send(Write(text=f"n{i}", order_id=f"o-{i}"))
        async with db.engine.connect() as conn:
            count = (await conn.execute(select(func.count()).select_from(outbox_table))).scalar()
        assert count == 5
        rows = await all_rows(db, outbox_table)
        assert [r["key"] for r in rows] == [f"o-{i}".encode() for i in range(5)]
        assert len({r["event_id"] for r in rows}) == 5


def test_only_tables_without_python_side_defaults_or_converting_types_skip_the_session() -> None:
    from sqlalchemy import JSON, DateTime

    from wirebus.outbox._onestatement import OneStatementWriter

    typed = MetaData()
    plain = Table("t_plain", typed, Column("id", Integer, primary_key=True), Column("s", String))
    defaulted = Table(
        "t_defaulted",
        typed,
        Column("id", Integer, primary_key=True),
        Column("at", DateTime(timezone=True), default=lambda: NOW),
    )
    converted = Table("t_json", typed, Column("id", Integer, primary_key=True), Column("j", JSON))
    writer = OneStatementWriter(Database("postgresql+asyncpg://u:p@127.0.0.1:1/none"))

    assert writer.plain(plain)
    assert writer.plain(orders_table)  # the shop's rows take the one-statement path
    assert not writer.plain(defaulted)  # a Python default only the session applies
    assert not writer.plain(converted)  # a bind processor only the session runs
    assert writer.groups([(defaulted, {"id": 1})]) is None  # so the call uses the session
