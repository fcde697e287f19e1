"""A request sent inside ``joining(ctx)`` joins the caller's open unit of work (a saga step's).

The nested handler's rows and the events it emits commit with the caller's
own changes in one transaction, or roll back with them; outside the block a
nested send commits on its own, as before.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from shop.orders.v1 import orders_pb2
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from wirebus import App, Command, Context, Event, Mediator, Router
from wirebus.db import Database, outbox_table
from wirebus.outbox.uow import joining

NOW = dt.datetime(2025, 3, 4, 5, 6, 7, tzinfo=dt.UTC)

state = MetaData()
notes = Table(
    "test_join_notes",
    state,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("text", String(100), nullable=False),
)


class Placed(Event, proto=orders_pb2.OrderPlaced, key="order_id", topic="test.join.v1"):
    order_id: str
    customer_id: str
    total_cents: int
    placed_at: dt.datetime


class Inner(Command[None]):
    text: str


class Outer(Command[None]):
    text: str
    join: bool = True
    fail: bool = False


class Boom(Exception):
    pass


def join_app() -> App:
    router = Router("join")

    @router.handler
    async def inner(cmd: Inner, session: AsyncSession, ctx: Context) -> None:
        await session.execute(insert(notes).values(text=f"inner {cmd.text}"))
        ctx.emit(Placed(order_id=cmd.text, customer_id="c", total_cents=1, placed_at=NOW))

    @router.handler
    async def outer(cmd: Outer, session: AsyncSession, ctx: Context, mediator: Mediator) -> None:
        if cmd.join:
            with joining(ctx):
                await mediator.send(Inner(text=cmd.text))
        else:
            await mediator.send(Inner(text=cmd.text))
        await session.execute(insert(notes).values(text=f"outer {cmd.text}"))
        if cmd.fail:
            raise Boom("after the nested request succeeded")

    return App(name="join", routers=[router], events=[Placed], metadata=state)


async def rows(db: Database, table: Table) -> list[Any]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(select(table))).mappings().all())


def database(tmp_path: Path) -> Database:
    url = f"sqlite+aiosqlite:///{tmp_path}/join.db"
    return Database(url, create_schema=True, extra_metadata=[state])


async def test_a_joined_request_commits_with_its_caller_in_one_transaction(tmp_path: Path) -> None:
    db = database(tmp_path)
    async with join_app().mediator(database=db) as mediator:
        await mediator.send(Outer(text="a"))
        assert sorted(r["text"] for r in await rows(db, notes)) == ["inner a", "outer a"]
        [row] = await rows(db, outbox_table)  # the nested handler's event, in the caller's commit
        assert orders_pb2.OrderPlaced.FromString(row["value"]).order_id == "a"


async def test_a_caller_failing_after_a_joined_request_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    db = database(tmp_path)
    async with join_app().mediator(database=db) as mediator:
        with pytest.raises(Boom):
            await mediator.send(Outer(text="b", fail=True))
        assert await rows(db, notes) == []
        assert await rows(db, outbox_table) == []


async def test_without_joining_a_nested_request_commits_on_its_own(tmp_path: Path) -> None:
    db = database(tmp_path)
    async with join_app().mediator(database=db) as mediator:
        with pytest.raises(Boom):
            await mediator.send(Outer(text="c", join=False, fail=True))
        assert [r["text"] for r in await rows(db, notes)] == ["inner c"]  # its own transaction
        assert len(await rows(db, outbox_table)) == 1
