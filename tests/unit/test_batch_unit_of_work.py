"""A consumed partition's batch commits in one transaction; a bad record fails alone.

Each test runs on its own SQLite file under ``tmp_path``: a handler of
``OrderPlaced`` writes a ledger row on its session and emits
``PaymentCaptured`` (which travels: an outbox row). The processor is given
the database, so a batch of records runs in one ``BatchUnitOfWork``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, MetaData, String, Table, event, func, insert, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from examples.shop.orders.messages import LineItem, OrderPlaced
from examples.shop.payments.messages import PaymentCaptured
from wirebus import App, Context, Router
from wirebus.broker import EventEncoder, Record
from wirebus.brokers.memory import InMemoryBroker
from wirebus.consumer import EventProcessor, Outcome, ProcessingInterrupted
from wirebus.consumer_runner import ConsumerRunner
from wirebus.db import Database, inbox_table, outbox_table
from wirebus.inbox.sqlalchemy import SqlAlchemyInbox
from wirebus.retry import Retry
from wirebus.testing import wait_until

NOW = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
TOPIC = "shop.orders.v1"
GROUP = "payments"

state = MetaData()
ledger = Table("test_ledger", state, Column("order_id", String(64), primary_key=True))


def ledger_app() -> App:
    router = Router("payments")

    @router.handler
    async def capture(event: OrderPlaced, session: AsyncSession, ctx: Context) -> None:
        if event.order_id == "bad":
            raise ValueError("card declined")
        await session.execute(insert(ledger).values(order_id=event.order_id))
        ctx.emit(
            PaymentCaptured(
                payment_id=f"p-{event.order_id}",
                order_id=event.order_id,
                amount_cents=event.total_cents,
                captured_at=NOW,
            )
        )

    return App(
        name="ledger", routers=[router], events=[OrderPlaced, PaymentCaptured], metadata=state
    )


def placed(order_id: str) -> OrderPlaced:
    items = (LineItem(sku="s", quantity=1, price_cents=5),)
    return OrderPlaced(
        order_id=order_id, customer_id="c", items=items, total_cents=5, placed_at=NOW
    )


class Commits:
    """Counts the transactions committed on an engine."""

    def __init__(self, database: Database) -> None:
        self.count = 0
        event.listen(database.engine.sync_engine, "commit", self._committed)

    def _committed(self, _conn: Any) -> None:
        self.count += 1


class Env:
    def __init__(self, tmp_path: Path) -> None:
        self.app = ledger_app()
        self.db = Database(
            f"sqlite+aiosqlite:///{tmp_path / 'batch.db'}",
            create_schema=True,
            extra_metadata=[state],
        )
        self.broker = InMemoryBroker(partitions=1)
        self.dlq = self.broker.publisher(self.app.registry(), source="test")
        self.encoder = EventEncoder(self.app.registry(), source="orders")
        self.offset = 0

    def records(self, *order_ids: str) -> list[Record]:
        out = []
        for order_id in order_ids:
            r = self.encoder.record(placed(order_id))
            out.append(Record(r.topic, 0, self.offset, r.key, r.value, r.headers))
            self.offset += 1
        return out

    def processor(self, mediator: Any) -> EventProcessor:
        async def no_sleep(_seconds: float) -> None:
            return None

        return EventProcessor(
            mediator,
            self.app.registry(),
            group=GROUP,
            inbox=SqlAlchemyInbox(self.db.engine),
            dead_letters=self.dlq,
            retry=Retry(attempts=3),
            claim_inbox=True,
            database=self.db,
            sleep=no_sleep,
        )

    async def column(self, column: Any) -> list[Any]:
        async with self.db.engine.connect() as conn:
            return list((await conn.execute(select(column).order_by(column))).scalars())

    async def count(self, table: Table) -> int:
        async with self.db.engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


@contextlib.asynccontextmanager
async def anyio_task(runner: ConsumerRunner) -> AsyncIterator[None]:
    """Run ``runner`` in the background; stop it and wait for its end on leaving."""
    task = asyncio.create_task(runner.run())
    try:
        yield
    finally:
        await runner.stop()
        await task


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    environment = Env(tmp_path)
    yield environment
    await environment.db.close()


async def process(processor: EventProcessor, records: list[Record]) -> list[Outcome]:
    outcomes: list[Outcome] = []
    await processor.process_batch(records, lambda _r, outcome: outcomes.append(outcome))
    return outcomes


async def captured_orders(env: Env) -> list[str]:
    """The order ids of the PaymentCaptured outbox rows, in outbox (id) order."""
    async with env.db.engine.connect() as conn:
        rows = (await conn.execute(select(outbox_table.c.key).order_by(outbox_table.c.id))).all()
    return [row.key.decode() for row in rows]


async def test_a_batch_of_records_commits_in_one_transaction(env: Env) -> None:
    ids = [f"o-{i:02}" for i in range(20)]
    async with env.app.mediator(database=env.db, owns_database=False) as mediator:
        commits = Commits(env.db)
        outcomes = await process(env.processor(mediator), env.records(*ids))
    assert outcomes == ["handled"] * 20
    assert commits.count == 1
    assert await env.column(ledger.c.order_id) == ids
    assert await captured_orders(env) == ids  # the records' order, kept
    assert await env.count(inbox_table) == 20


async def test_a_failing_record_is_dead_lettered_alone_and_its_neighbours_commit(
    env: Env,
) -> None:
    async with env.app.mediator(database=env.db, owns_database=False) as mediator:
        outcomes = await process(env.processor(mediator), env.records("o-1", "bad", "o-3"))
    assert outcomes == ["handled", "dead_lettered", "handled"]
    assert await env.column(ledger.c.order_id) == ["o-1", "o-3"]
    assert await captured_orders(env) == ["o-1", "o-3"]
    assert await env.count(inbox_table) == 2
    [dead] = env.broker.records(TOPIC + ".dlq")
    headers = {k: v.decode() for k, v in dead.headers if k.startswith("wirebus_")}
    assert headers["wirebus_error_type"] == "ValueError"
    assert headers["wirebus_attempts"] == "3"


async def test_a_duplicate_within_a_batch_and_across_batches_is_dropped_by_the_inbox(
    env: Env,
) -> None:
    first, second = env.records("o-1", "o-2")
    async with env.app.mediator(database=env.db, owns_database=False) as mediator:
        processor = env.processor(mediator)
        within = await process(processor, [first, second, first])
        across = await process(processor, [second, first])
    assert within == ["handled", "handled", "duplicate"]
    assert across == ["duplicate", "duplicate"]
    assert await captured_orders(env) == ["o-1", "o-2"]
    assert await env.count(inbox_table) == 2


class FailingCommit:
    """The next ``times`` commits on the engine fail as if the database were gone."""

    def __init__(self, database: Database, times: int = 1) -> None:
        self.left = times
        event.listen(database.engine.sync_engine, "commit", self._commit)

    def _commit(self, conn: Any) -> None:
        if self.left > 0:
            self.left -= 1
            conn.invalidate()  # the connection is lost with its transaction
            raise OperationalError("COMMIT", {}, ConnectionResetError("database went away"))


async def test_a_batch_that_fails_to_commit_leaves_nothing_and_its_redelivery_handles_each_once(
    env: Env,
) -> None:
    records = env.records("o-1", "o-2", "o-3")
    async with env.app.mediator(database=env.db, owns_database=False) as mediator:
        processor = env.processor(mediator)
        FailingCommit(env.db)
        reported: list[Outcome] = []
        with pytest.raises(ProcessingInterrupted):
            await processor.process_batch(records, lambda _r, o: reported.append(o))
        assert reported == []  # no outcome: the runner commits no offset
        assert await env.count(outbox_table) == 0
        assert await env.count(ledger) == 0
        assert await env.count(inbox_table) == 0
        redelivered = await process(processor, records)
    assert redelivered == ["handled"] * 3
    assert await captured_orders(env) == ["o-1", "o-2", "o-3"]
    assert await env.count(inbox_table) == 3


async def test_the_runner_commits_offsets_only_after_the_batch_committed(env: Env) -> None:
    publisher = env.broker.publisher(env.app.registry(), source="orders")
    await publisher.publish_many([placed(f"o-{i}") for i in range(5)])
    async with env.app.mediator(database=env.db, owns_database=False) as mediator:
        failing = FailingCommit(env.db)
        port = env.broker.consumer(group=GROUP, topics=[TOPIC])
        runner = ConsumerRunner(port, env.processor(mediator), failure_pause=0.05)
        await runner.start()
        async with anyio_task(runner):
            await wait_until(lambda: failing.left == 0, message="the failed commit")
            assert env.broker.committed(GROUP, (TOPIC, 0)) == 0
            await wait_until(lambda: env.broker.committed(GROUP, (TOPIC, 0)) == 5)
        assert await captured_orders(env) == [f"o-{i}" for i in range(5)]
    assert runner.outcomes == {"handled": 5}
