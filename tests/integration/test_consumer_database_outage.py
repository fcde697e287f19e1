"""A PostgreSQL database that goes away while a consumer works dead-letters nothing.

A ``ConsumerRunner`` on real Kafka handles a stream of events; its handler
writes a state row through its session and the inbox row commits with it
(PostgreSQL). Mid-stream every session of the database is ended, three
times, then the database refuses every connection for a few seconds
(``CONNECTION LIMIT 0``, which binds its non-superuser owner). Nothing goes
to the DLQ, every event leaves exactly one state row, and the consumer goes
on by itself once the database answers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from shop.orders.v1 import orders_pb2
from sqlalchemy import Column, MetaData, String, Table, insert, text
from sqlalchemy.engine import make_url

from tests.integration.conftest import plain_dsn, read_records
from wirebus import App, Event, Router
from wirebus.broker import Record
from wirebus.consumer import EventProcessor, Outcome
from wirebus.consumer_runner import ConsumerRunner
from wirebus.db import Database
from wirebus.inbox.sqlalchemy import SqlAlchemyInbox
from wirebus.kafka import KafkaConsumer, KafkaEventPublisher, ensure_topics
from wirebus.outbox.uow import UnitOfWork
from wirebus.testing import wait_until

pytestmark = pytest.mark.integration

EVENTS = 600
CHUNK = 20
REFUSED_FOR = 3.0  # seconds the database refuses every connection
T0 = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)

WORK = text("SELECT pg_sleep(0.005)")
state = MetaData()
notes = Table("it_outage_notes", state, Column("order_id", String(40), primary_key=True))


def outage_app(topic: str) -> tuple[App, type[Event]]:
    class Placed(Event, proto=orders_pb2.OrderPlaced, key="order_id", topic=topic):
        order_id: str
        customer_id: str
        total_cents: int
        placed_at: dt.datetime

    router = Router("outage")

    @router.handler
    async def note(event: Placed, uow: UnitOfWork) -> None:
        await uow.session.execute(WORK)  # time in the handler: where the outage hits
        await uow.session.execute(insert(notes).values(order_id=event.order_id))

    return App(name="outage", routers=[router], events=[Placed], metadata=state), Placed


class Admin:
    """A session on the server's main database that ends and refuses the test database's."""

    def __init__(self, conn: asyncpg.Connection, name: str) -> None:
        self.conn, self.name = conn, name

    async def terminate_all(self) -> int:
        ended = await self.conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1",
            self.name,
        )
        return int(ended)

    async def connection_limit(self, limit: int) -> None:
        await self.conn.execute(f'ALTER DATABASE "{self.name}" CONNECTION LIMIT {limit}')

    async def count(self, dsn: str) -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM it_outage_notes"))
        finally:
            await conn.close()


@pytest.fixture
async def admin(pg_url: str, database_url: str) -> AsyncIterator[Admin]:
    name = make_url(pg_url).database
    assert name is not None
    conn = await asyncpg.connect(plain_dsn(database_url))
    try:
        yield Admin(conn, name)
    finally:
        await conn.execute(f'ALTER DATABASE "{name}" CONNECTION LIMIT -1')
        await conn.close()


async def test_a_database_going_away_mid_stream_dead_letters_nothing_and_loses_nothing(
    bootstrap: str, fresh: str, pg_url: str, admin: Admin
) -> None:
    topic = f"{fresh}.orders"
    app, placed = outage_app(topic)
    registry = app.registry()
    await ensure_topics(bootstrap, [topic, topic + ".dlq"], partitions=3)
    database = Database(pg_url, create_schema=True, extra_metadata=[state])
    await database.start()
    handled_at: list[float] = []

    def on_outcome(_record: Record, outcome: Outcome) -> None:
        if outcome == "handled":
            handled_at.append(time.monotonic())

    async with (
        KafkaEventPublisher(bootstrap, registry, source="it") as dlq,
        KafkaEventPublisher(bootstrap, registry, source="orders") as producer,
        app.mediator(database=database, owns_database=False) as mediator,
    ):
        processor = EventProcessor(
            mediator,
            registry,
            group=f"{fresh}-group",
            inbox=SqlAlchemyInbox(database.engine),
            dead_letters=dlq,
            claim_inbox=True,
            database=database,
        )
        port = KafkaConsumer(bootstrap, group=f"{fresh}-group", topics=[topic])
        runner = ConsumerRunner(port, processor, poll_timeout=0.2, on_outcome=on_outcome)
        await runner.start()
        consuming = asyncio.create_task(runner.run())
        figures: dict[str, Any] = {}
        try:

            async def produce() -> None:
                for start in range(0, EVENTS, CHUNK):
                    events = [
                        placed(order_id=f"o-{i:04}", customer_id="c", total_cents=i, placed_at=T0)
                        for i in range(start, start + CHUNK)
                    ]
                    await producer.publish_many(events)
                    await asyncio.sleep(0.2)

            async def outage() -> None:
                await wait_until(lambda: len(handled_at) >= 60, within=60)
                ended = 0
                for _ in range(3):
                    ended += await admin.terminate_all()
                    await asyncio.sleep(0.5)
                await admin.connection_limit(0)
                ended += await admin.terminate_all()
                await asyncio.sleep(REFUSED_FOR)
                await admin.connection_limit(-1)
                figures["ended"] = ended
                figures["back_at"] = time.monotonic()
                figures["handled_before_back"] = len(handled_at)

            async with asyncio.TaskGroup() as group:
                group.create_task(produce())
                group.create_task(outage())
            await wait_until(lambda: runner.outcomes.get("handled", 0) >= EVENTS, within=90)
        finally:
            await runner.stop()
            await asyncio.wait_for(consuming, 60)
    await database.close()
    dead = await read_records(bootstrap, topic + ".dlq", 1, within=2)
    rows = await admin.count(plain_dsn(pg_url))
    resumed = next(t for t in handled_at if t > figures["back_at"])
    print(
        f"\nsessions ended: {figures['ended']}; dead-lettered: {len(dead)};"
        f" handled before the database was back: {figures['handled_before_back']};"
        f" first record handled {resumed - figures['back_at']:.2f} s after it was back;"
        f" outcomes: {runner.outcomes}; outages: {runner.database_outages}"
    )
    assert dead == []
    assert rows == EVENTS
    assert runner.outcomes == {"handled": EVENTS}
    assert figures["ended"] >= 2
    assert runner.database_outages >= 1
