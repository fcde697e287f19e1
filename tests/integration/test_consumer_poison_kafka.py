"""Poison records on a real Kafka broker and PostgreSQL: each one leaves its partition.

The issue's reproductions, on a topic of one partition: a poison record
first, then ordinary records of the same partition. Each test measures how
long the consumer takes to handle the ordinary ones (before the fix it never
did: the poison record was retried every second for good).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from shop.orders.v1 import orders_pb2

from tests.integration.conftest import read_records
from wirebus import App, Event, Router
from wirebus.broker import EventEncoder, OutgoingRecord
from wirebus.consumer import EventProcessor
from wirebus.consumer_runner import ConsumerRunner
from wirebus.db import Database
from wirebus.inbox import InMemoryInbox
from wirebus.inbox.sqlalchemy import SqlAlchemyInbox
from wirebus.kafka import KafkaConsumer, KafkaEventPublisher
from wirebus.testing import wait_until

pytestmark = pytest.mark.integration

log = logging.getLogger(__name__)
T0 = dt.datetime(2026, 11, 23, 12, 0, 0, tzinfo=dt.UTC)
WITHIN = 60.0
"""How long the ordinary records may take to be handled after a poison one."""


class Shop:
    """An app with one recording ``OrderCancelled`` handler on topic ``topic``."""

    def __init__(self, topic: str) -> None:
        class Cancelled(Event, proto=orders_pb2.OrderCancelled, key="order_id", topic=topic):
            order_id: str
            reason: str
            cancelled_at: dt.datetime

        self.topic, self.Cancelled = topic, Cancelled
        self.seen: list[str] = []
        router = Router("it")

        @router.handler
        async def record(event: Cancelled) -> None:  # type: ignore[valid-type]
            self.seen.append(event.order_id)

        self.app = App(name="it", routers=[router])
        self.registry = self.app.registry()
        self.encoder = EventEncoder(self.registry, source="it-orders")

    def record(self, order_id: str) -> OutgoingRecord:
        event = self.Cancelled(order_id=order_id, reason="r", cancelled_at=T0)
        return self.encoder.record(event)


async def create_topic(bootstrap: str, topic: str, **config: str) -> None:
    """``topic`` of one partition with ``config``, and its DLQ with the broker's defaults."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, 1, 1, topic_configs=config), NewTopic(topic + ".dlq", 1, 1)]
        )
    finally:
        await admin.close()


async def produce(
    bootstrap: str, records: list[tuple[bytes | None, bytes | None, OutgoingRecord]]
) -> None:
    """Write ``(key, value, outgoing record)`` as they are, to the record's topic."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=16 * 1024 * 1024)
    await producer.start()
    try:
        for key, value, out in records:
            await producer.send_and_wait(out.topic, value, key, 0, None, list(out.headers))
    finally:
        await producer.stop()


async def consume_until(
    bootstrap: str,
    shop: Shop,
    group: str,
    done: Callable[[], bool],
    *,
    database: Database | None = None,
) -> tuple[ConsumerRunner, EventProcessor, float]:
    """Run the consumer (DLQ: a default Kafka publisher) until ``done``; the seconds it took."""
    async with (
        KafkaEventPublisher(bootstrap, shop.registry, source="it") as dlq,
        shop.app.mediator(database=database, owns_database=False) as mediator,
    ):
        inbox: Any = InMemoryInbox() if database is None else SqlAlchemyInbox(database.engine)
        processor = EventProcessor(
            mediator,
            shop.registry,
            group=group,
            inbox=inbox,
            dead_letters=dlq,
            claim_inbox=database is not None,
            database=database,
        )
        port = KafkaConsumer(bootstrap, group=group, topics=[shop.topic])
        runner = ConsumerRunner(port, processor, poll_timeout=0.2)
        started = time.monotonic()
        await runner.start()
        task = asyncio.create_task(runner.run())
        try:
            await wait_until(done, within=WITHIN, interval=0.05)
            took = time.monotonic() - started
        finally:
            await runner.stop()
            await asyncio.wait_for(task, 60)
    return runner, processor, took


BROKER_DEFAULT_LIMIT = 1_048_588
"""Kafka's default ``max.message.bytes`` of a topic (a record batch, headers included)."""


@pytest.mark.parametrize(
    ("value_bytes", "topic_config"),
    [
        (None, {}),  # the largest value the default topic takes; over it with the DLQ headers
        (4 * 1024 * 1024, {"max.message.bytes": str(5 * 1024 * 1024)}),
    ],
    ids=["largest-a-default-topic-accepts", "4MiB-on-a-5MiB-topic"],
)
async def test_a_record_too_large_to_dead_letter_whole_no_longer_blocks_its_partition(
    bootstrap: str, fresh: str, value_bytes: int | None, topic_config: dict[str, str]
) -> None:
    shop = Shop(f"{fresh}.orders")
    await create_topic(bootstrap, shop.topic, **topic_config)
    poison = shop.record("poison")
    if value_bytes is None:  # the batch's own overhead is under 100 bytes
        metadata = len(poison.key or b"") + sum(len(k) + len(v) + 2 for k, v in poison.headers)
        value_bytes = BROKER_DEFAULT_LIMIT - 100 - metadata
    garbage = b"\xff" * value_bytes
    after = [shop.record(f"o{i}") for i in range(5)]
    await produce(bootstrap, [(poison.key, garbage, poison), *((r.key, r.value, r) for r in after)])

    runner, processor, took = await consume_until(
        bootstrap, shop, f"{fresh}-g", lambda: len(shop.seen) == 5
    )
    log.warning("the 5 records after a %d-byte poison record: handled in %.2fs", value_bytes, took)

    assert shop.seen == [f"o{i}" for i in range(5)]
    assert runner.outcomes == {"dead_lettered": 1, "handled": 5}
    assert processor.truncated_dead_letters == 1
    [dead] = await read_records(bootstrap, shop.topic + ".dlq", 1)
    headers = dict(dead.headers)
    assert headers["wirebus_error_type"] == b"UndecodableEvent"
    assert headers["wirebus_truncated"] == b"value"
    assert headers["wirebus_original_size"] == str(value_bytes).encode()
    assert headers["wirebus_original_sha256"] == hashlib.sha256(garbage).hexdigest().encode()
    assert headers["ce_id"] == dict(poison.headers)["ce_id"]
    assert garbage.startswith(dead.value)


@pytest.fixture
async def database(pg_url: str) -> AsyncIterator[Database]:
    database = Database(pg_url, create_schema=True)
    await database.start()
    yield database
    await database.close()


def with_id(out: OutgoingRecord, ce_id: bytes) -> OutgoingRecord:
    headers = tuple((k, ce_id if k == "ce_id" else v) for k, v in out.headers)
    return OutgoingRecord(out.topic, out.key, out.value, headers)


async def test_ce_ids_postgres_cannot_store_and_tombstones_are_dead_lettered_at_once(
    bootstrap: str, fresh: str, database: Database
) -> None:
    shop = Shop(f"{fresh}.orders")
    await create_topic(bootstrap, shop.topic)
    nul = with_id(shop.record("nul"), b"abc\x00def")
    long = with_id(shop.record("long"), b"x" * 300)
    tombstone = shop.record("gone")
    after = [shop.record(f"o{i}") for i in range(5)]
    await produce(
        bootstrap,
        [
            (nul.key, nul.value, nul),
            (after[0].key, after[0].value, after[0]),
            (long.key, long.value, long),
            (tombstone.key, None, tombstone),
            *((r.key, r.value, r) for r in after[1:]),
        ],
    )

    runner, _, took = await consume_until(
        bootstrap, shop, f"{fresh}-g", lambda: len(shop.seen) == 5, database=database
    )
    log.warning("the 5 records around 3 poison ones on PostgreSQL: handled in %.2fs", took)

    assert shop.seen == [f"o{i}" for i in range(5)]  # never "nul", "long" or a default ""
    assert runner.outcomes == {"dead_lettered": 3, "handled": 5}
    dead = await read_records(bootstrap, shop.topic + ".dlq", 3)
    reasons = [dict(d.headers) for d in dead]
    assert [r["wirebus_error_type"] for r in reasons] == [
        b"UnstorableEventId",
        b"UnstorableEventId",
        b"EmptyValue",
    ]
    assert [r["wirebus_attempts"] for r in reasons] == [b"0"] * 3
    messages = [r["wirebus_error_message"].decode() for r in reasons]
    assert "NUL" in messages[0]
    assert "300 characters" in messages[1]
    assert "null (a tombstone)" in messages[2]
    assert not any("SELECT" in m or "INSERT" in m for m in messages)
