"""The payments slice catches up a backlog on PostgreSQL, one transaction per partition batch.

A backlog of ``CapturePayment`` (what the payments slice answers since the
checkout saga; all under the payment limit) on the in-memory broker (3
partitions) is read by a ``ConsumerRunner`` whose processor has the real
PostgreSQL database: every record ends with one ``PaymentCaptured`` outbox row
and one inbox row, and the outbox rows of each partition keep the records' order.
"""

from __future__ import annotations

import asyncio
import datetime as dt

from sqlalchemy import func, select

from bench.backlog_noop_app import capture_payments
from examples.shop.app import app as shop_app
from examples.shop.payments.messages import CapturePayment
from wirebus.brokers.memory import InMemoryBroker
from wirebus.consumer import EventProcessor
from wirebus.consumer_runner import ConsumerRunner
from wirebus.db import Database, inbox_table, outbox_table
from wirebus.inbox.sqlalchemy import SqlAlchemyInbox
from wirebus.outbox.rows import unpack_headers
from wirebus.testing import wait_until

BACKLOG = 3000
NOW = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


async def test_a_backlog_becomes_one_outbox_and_one_inbox_row_per_record_in_order(
    pg_url: str,
) -> None:
    database = Database(pg_url, create_schema=True, extra_metadata=[shop_app.metadata])
    broker = InMemoryBroker(partitions=3)
    registry = shop_app.registry()
    publisher = broker.publisher(registry, source="orders")
    backlog = capture_payments(BACKLOG)
    await publisher.publish_many(backlog)
    topic = registry.by_type(CapturePayment).topic  # type: ignore[union-attr]
    async with shop_app.mediator(database=database, publisher=publisher) as mediator:
        processor = EventProcessor(
            mediator,
            registry,
            group="payments",
            inbox=SqlAlchemyInbox(database.engine),
            dead_letters=publisher,
            routers=frozenset({"payments"}),
            claim_inbox=True,
            database=database,
        )
        runner = ConsumerRunner(broker.consumer(group="payments", topics=[topic]), processor)
        await runner.start()
        task = asyncio.create_task(runner.run())
        try:
            await wait_until(lambda: sum(runner.outcomes.values()) >= BACKLOG, within=120)
        finally:
            await runner.stop()
            await task
        async with database.engine.connect() as conn:
            outbox = (
                await conn.execute(
                    select(outbox_table.c.key, outbox_table.c.headers).order_by(outbox_table.c.id)
                )
            ).all()
            captured = [key.decode() for key, _ in outbox]
            inbox_rows = (
                await conn.execute(select(func.count()).select_from(inbox_table))
            ).scalar_one()
    assert runner.outcomes == {"handled": BACKLOG}
    assert inbox_rows == BACKLOG
    types = {dict(unpack_headers(headers))["ce_type"] for _, headers in outbox}
    assert types == {b"shop.payments.v1.PaymentCaptured"}  # one capture each, no decline
    assert sorted(captured) == [c.order_id for c in backlog]
    for partition in range(3):
        consumed = [r.key.decode() for r in broker.records(topic) if r.partition == partition]
        mine = set(consumed)
        assert [k for k in captured if k in mine] == consumed  # per-key (partition) order


async def test_the_postgresql_inbox_marks_and_finds_a_batch_in_one_call_each_ignoring_repeats(
    pg_url: str,
) -> None:
    database = Database(pg_url)
    inbox = SqlAlchemyInbox(database.engine)
    ids = [f"e-{i}" for i in range(1234)]
    try:
        await inbox.create_schema()
        await inbox.mark_many("payments", ids[::2])
        await inbox.mark_many("payments", [*ids[:10], "e-1", *ids[1::2]])
        await inbox.mark_many("payments", [])

        assert await inbox.seen_many("payments", ids) == set(ids)
        assert await inbox.seen_many("shipping", ids) == set()
        assert await inbox.seen_many("payments", []) == set()
        assert await inbox.seen_many("payments", ["e-1", "e-", "e-12345"]) == {"e-1"}
        async with database.engine.connect() as conn:
            rows = (await conn.execute(select(func.count()).select_from(inbox_table))).scalar_one()
        assert rows == len(ids)
    finally:
        await inbox.close()
        await database.close()


async def test_a_batch_writes_its_outbox_rows_as_staged_in_the_order_staged(pg_url: str) -> None:
    from examples.shop.payments.messages import PaymentCaptured
    from wirebus.broker import EventEncoder
    from wirebus.outbox.batch import BatchUnitOfWork
    from wirebus.outbox.rows import row_from_record

    database = Database(pg_url, create_schema=True, extra_metadata=[shop_app.metadata])
    encoder = EventEncoder(shop_app.registry(), source="payments")
    events = [
        PaymentCaptured(payment_id=f"p-{i}", order_id=f"o-{i % 7}", amount_cents=i, captured_at=NOW)
        for i in range(600)
    ]
    staged = [row_from_record(encoder.record(e), NOW) for e in events]
    staged[3]["key"] = None  # a record without a key is stored as NULL
    try:
        await database.start()  # creates the schema
        batch = BatchUnitOfWork(database, group="payments")
        try:
            batch.add_outbox_rows(staged)
            await batch.commit()
        finally:
            await batch.close()
        columns = [outbox_table.c[name] for name in staged[0]]
        async with database.engine.connect() as conn:
            stored = (
                (await conn.execute(select(*columns).order_by(outbox_table.c.id))).mappings().all()
            )
    finally:
        await database.close()
    assert batch.commits == 1
    assert [dict(row) for row in stored] == staged
