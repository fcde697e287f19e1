"""Poison records on the consumer side: each one leaves its partition, with a clear reason.

A record the processor cannot handle goes to ``<topic>.dlq`` and its offset
is committed, whatever is wrong with it: a value too large to be
dead-lettered whole, a ``ce_id`` the inbox cannot store, a null or empty
value. The records after it on the partition are handled as usual.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from shop.orders.v1 import orders_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from examples.shop.app import app as shop_app
from examples.shop.orders.messages import LineItem, OrderPlaced
from wirebus import App, Event, Router
from wirebus.broker import EventEncoder, OutgoingRecord, PublishError, Record
from wirebus.brokers.memory import InMemoryBroker
from wirebus.consumer import EventProcessor, dead_letter_record
from wirebus.consumer_runner import ConsumerRunner
from wirebus.db import Database, inbox_table
from wirebus.dlq import REPLAY_GROUP, replay
from wirebus.errors import ConfigurationError
from wirebus.inbox import MAX_EVENT_ID_LENGTH, InMemoryInbox
from wirebus.inbox.sqlalchemy import SqlAlchemyInbox
from wirebus.testing import wait_until

NOW = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
TOPIC = "shop.orders.v1"
DLQ = "shop.orders.v1.dlq"
LIMIT = 64 * 1024
"""The DLQ publisher's ``max_request_size`` in these tests (Kafka's default is 1 MiB)."""


class Cancelled(Event, proto=orders_pb2.OrderCancelled, key="order_id"):
    order_id: str
    reason: str
    cancelled_at: dt.datetime


class SizeLimitedPublisher:
    """The in-memory broker behind Kafka's producer rule: a record over ``limit`` bytes
    (key, value and headers) is refused, and refused again on every retry."""

    def __init__(self, broker: InMemoryBroker, app: App, limit: int) -> None:
        self.inner = broker.publisher(app.registry(), source="test")
        self.limit = limit
        self.refused = 0

    def _check(self, records: Sequence[OutgoingRecord]) -> None:
        for r in records:
            size = len(r.key or b"") + len(r.value)
            size += sum(len(k.encode()) + len(v) for k, v in r.headers)
            if size > self.limit:
                self.refused += 1
                error = PublishError(r.topic, f"MessageSizeTooLargeError: {size} bytes")
                error.retriable = False
                raise error

    async def publish(self, event: Any, *, subject: str | None = None) -> None:
        await self.inner.publish(event, subject=subject)

    async def publish_many(self, events: Iterable[Any]) -> None:
        await self.inner.publish_many(events)

    async def send_records(self, records: Sequence[OutgoingRecord]) -> None:
        self._check(records)
        await self.inner.send_records(records)

    async def send_records_settled(
        self, records: Sequence[OutgoingRecord]
    ) -> list[BaseException | None]:
        self._check(records)
        return await self.inner.send_records_settled(records)


def cancelled(order_id: str) -> Cancelled:
    return Cancelled(order_id=order_id, reason="changed my mind", cancelled_at=NOW)


def recording_app(seen: list[str], *, tombstones: bool = False) -> App:
    router = Router("test")

    @router.handler(tombstones=tombstones)
    async def on_cancelled(event: Cancelled) -> None:
        seen.append(event.order_id)

    return App(name="test", routers=[router])


_ENCODED = object()


def record_of(app: App, event: Any, *, offset: int = 0, value: Any = _ENCODED) -> Record:
    """``event`` as its producer encodes it; ``value`` replaces the encoded value."""
    out = EventEncoder(app.registry(), source="producer").record(event)
    value = out.value if value is _ENCODED else value
    return Record(out.topic, 0, offset, out.key, value, out.headers)


def with_header(record: Record, name: str, value: bytes) -> Record:
    headers = tuple((k, value if k == name else v) for k, v in record.headers)
    return Record(record.topic, 0, record.offset, record.key, record.value, headers)


def processor_for(app: App, dead_letters: Any, **kwargs: Any) -> EventProcessor:
    return EventProcessor(
        app.mediator(),
        app.registry(),
        group="g",
        inbox=InMemoryInbox(),
        dead_letters=dead_letters,
        **kwargs,
    )


def why(record: Record | OutgoingRecord) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers if k.startswith("wirebus_")}


async def run_until(runner: ConsumerRunner, condition: Any, within: float) -> None:
    await runner.start()
    task = asyncio.create_task(runner.run())
    try:
        await wait_until(condition, within=within)
    finally:
        await runner.stop()
        await asyncio.wait_for(task, 10)


# ---------------------------------------------------- a record too large to dead-letter whole


async def test_a_record_too_large_to_dead_letter_whole_leaves_the_partition_truncated() -> None:
    seen: list[str] = []
    app = recording_app(seen)
    broker = InMemoryBroker(partitions=1)
    garbage = b"\xff" * (LIMIT - 400)  # accepted on the topic; with the DLQ headers too large
    poison = record_of(app, cancelled("poison"), value=garbage)
    publisher = broker.publisher(app.registry(), source="test")
    await publisher.send_records([OutgoingRecord(TOPIC, poison.key, garbage, poison.headers)])
    await publisher.publish_many([cancelled(f"o{i}") for i in range(3)])
    dead_letters = SizeLimitedPublisher(broker, app, LIMIT)
    processor = processor_for(app, dead_letters, max_dead_letter_bytes=LIMIT)
    runner = ConsumerRunner(
        broker.consumer(group="g", topics=[TOPIC]), processor, failure_pause=0.01
    )

    await run_until(runner, lambda: len(seen) == 3, within=5)

    assert seen == ["o0", "o1", "o2"]
    [dead] = broker.records(DLQ)
    reasons = why(dead)
    assert reasons["wirebus_error_type"] == "UndecodableEvent"
    assert reasons["wirebus_truncated"] == "value"
    assert reasons["wirebus_original_size"] == str(len(garbage))
    assert reasons["wirebus_original_sha256"] == hashlib.sha256(garbage).hexdigest()
    assert garbage.startswith(dead.value)
    assert 0 < len(dead.value) < len(garbage)
    assert dead.header("ce_id") == poison.header("ce_id")
    assert processor.truncated_dead_letters == 1
    assert runner.outcomes == {"dead_lettered": 1, "handled": 3}
    assert broker.committed("g", (TOPIC, 0)) == 4


def test_a_dead_letter_that_fits_is_kept_whole() -> None:
    record = Record(TOPIC, 0, 1, b"k", b"v" * 1000, (("ce_id", b"1"),))

    dead = dead_letter_record(record, ValueError("bad"), 1, max_bytes=LIMIT)

    assert dead.value == record.value
    assert "wirebus_truncated" not in why(dead)


def test_oversized_headers_and_key_are_cut_too_so_the_dead_letter_always_fits() -> None:
    headers = (("ce_id", b"1"), ("huge", b"h" * LIMIT), ("ce_type", b"t"))
    record = Record(TOPIC, 0, 1, b"k" * LIMIT, b"v" * LIMIT, headers)

    dead = dead_letter_record(record, ValueError("bad"), 1, max_bytes=LIMIT)

    size = len(dead.key or b"") + len(dead.value)
    size += sum(len(k.encode()) + len(v) for k, v in dead.headers)
    assert size <= LIMIT
    names = [k for k, _ in dead.headers]
    assert names[:2] == ["ce_id", "ce_type"]
    assert "huge" not in names
    reasons = why(dead)
    assert reasons["wirebus_truncated"] == "value,headers,key"
    assert reasons["wirebus_dropped_headers"] == "huge"
    assert reasons["wirebus_original_key_size"] == str(LIMIT)


def test_a_dead_letter_limit_too_small_for_the_reasons_is_refused_at_construction() -> None:
    with pytest.raises(ConfigurationError, match="max_dead_letter_bytes"):
        processor_for(recording_app([]), InMemoryBroker(), max_dead_letter_bytes=1000)


# ---------------------------------------------------- a ce_id the inbox cannot store


@pytest.mark.parametrize(
    ("ce_id", "reason"),
    [
        (b"abc\x00def", "NUL"),
        (b"x" * (MAX_EVENT_ID_LENGTH + 1), f"more than {MAX_EVENT_ID_LENGTH}"),
    ],
    ids=["nul-byte", "too-long"],
)
async def test_a_ce_id_the_inbox_cannot_store_is_dead_lettered_before_the_handler(
    ce_id: bytes, reason: str
) -> None:
    seen: list[str] = []
    app = recording_app(seen)
    broker = InMemoryBroker()
    poison = with_header(record_of(app, cancelled("poison")), "ce_id", ce_id)
    after = [record_of(app, cancelled(f"o{i}"), offset=i + 1) for i in range(2)]
    outcomes: list[str] = []
    processor = processor_for(app, broker.publisher(app.registry(), source="t"))

    await processor.process_batch([poison, *after], lambda _r, o: outcomes.append(o))

    assert outcomes == ["dead_lettered", "handled", "handled"]
    assert seen == ["o0", "o1"]
    [dead] = broker.records(DLQ)
    assert why(dead)["wirebus_error_type"] == "UnstorableEventId"
    assert reason in why(dead)["wirebus_error_message"]
    assert "SELECT" not in why(dead)["wirebus_error_message"]
    assert why(dead)["wirebus_attempts"] == "0"


async def test_a_ce_id_of_exactly_the_inbox_length_is_handled() -> None:
    seen: list[str] = []
    app = recording_app(seen)
    record = with_header(
        record_of(app, cancelled("o1")), "ce_id", b"\xc3\xa9" * MAX_EVENT_ID_LENGTH
    )  # 255 characters, 510 bytes: the column counts characters

    assert await processor_for(app, InMemoryBroker().publisher(app.registry(), source="t")).process(
        record
    ) == ("handled")
    assert seen == ["o1"]


def test_the_inbox_key_length_is_the_inbox_columns() -> None:
    assert inbox_table.c.event_id.type.length == MAX_EVENT_ID_LENGTH


def test_a_group_the_inbox_cannot_store_is_refused_at_construction() -> None:
    app = recording_app([])
    with pytest.raises(ConfigurationError, match="group"):
        EventProcessor(
            app.mediator(),
            app.registry(),
            group="g\x00",
            inbox=InMemoryInbox(),
            dead_letters=InMemoryBroker().publisher(app.registry(), source="t"),
        )


# ---------------------------------------------------- tombstones and empty values


def shop_order_record(value: bytes | None) -> Record:
    event = OrderPlaced(
        order_id="o-1",
        customer_id="c-1",
        items=(LineItem(sku="a", quantity=1, price_cents=5),),
        total_cents=5,
        placed_at=NOW,
    )
    return record_of(shop_app, event, value=value)


@pytest.mark.parametrize(("value", "what"), [(None, "null"), (b"", "empty")])
async def test_a_tombstone_or_empty_value_is_dead_lettered_not_handled_as_a_default_event(
    value: bytes | None, what: str
) -> None:
    broker = InMemoryBroker()
    processor = processor_for(shop_app, broker.publisher(shop_app.registry(), source="t"))

    outcome = await processor.process(shop_order_record(value=value))

    assert outcome == "dead_lettered"
    assert broker.records("shop.payments.v1") == []  # no PaymentCaptured for nobody
    [dead] = broker.records("shop.orders.v1.dlq")
    assert why(dead)["wirebus_error_type"] == "EmptyValue"
    assert what in why(dead)["wirebus_error_message"]
    assert "tombstones=True" in why(dead)["wirebus_error_message"]


@pytest.mark.parametrize("value", [None, b""], ids=["null", "empty"])
async def test_a_handler_that_asks_for_tombstones_gets_the_default_event(
    value: bytes | None,
) -> None:
    seen: list[str] = []
    app = recording_app(seen, tombstones=True)
    broker = InMemoryBroker()
    processor = processor_for(app, broker.publisher(app.registry(), source="t"))

    outcome = await processor.process(record_of(app, cancelled("o1"), value=value))

    assert (outcome, seen) == ("handled", [""])
    assert broker.records(DLQ) == []


async def test_only_the_handlers_that_ask_for_tombstones_get_them() -> None:
    wants: list[str] = []
    others: list[str] = []
    router = Router("test")

    @router.handler(tombstones=True)
    async def deletes(event: Cancelled) -> None:
        wants.append(event.order_id)

    @router.handler
    async def projects(event: Cancelled) -> None:
        others.append(event.order_id)

    app = App(name="test", routers=[router])
    processor = processor_for(app, InMemoryBroker().publisher(app.registry(), source="t"))

    assert await processor.process(record_of(app, cancelled("o1"), value=None)) == "handled"
    assert await processor.process(record_of(app, cancelled("o2"), offset=1)) == "handled"

    assert (wants, others) == (["", "o2"], ["o2"])


def test_tombstones_is_for_event_handlers_only() -> None:
    router = Router("test")

    async def get(query: orders_pb2.OrderPlaced) -> orders_pb2.OrderPlaced:
        return query

    with pytest.raises(ConfigurationError, match="tombstones"):
        router.handler(tombstones=True)(get)


def test_a_database_error_is_dead_lettered_with_the_drivers_message_not_the_sql() -> None:
    from sqlalchemy.exc import IntegrityError

    error = IntegrityError("INSERT INTO ledger VALUES (?)", ("o-1",), ValueError("duplicate key"))

    dead = dead_letter_record(Record(TOPIC, 0, 1, None, b"v", ()), error, 3)

    assert why(dead)["wirebus_error_message"] == "ValueError: duplicate key"
    assert why(dead)["wirebus_error_type"] == "IntegrityError"


# ---------------------------------------------------- the same in one batch transaction


async def test_poison_records_in_a_database_batch_are_dead_lettered_and_the_rest_commits(
    tmp_path: Path,
) -> None:
    seen: list[str] = []
    router = Router("test")

    @router.handler
    async def on_cancelled(event: Cancelled, session: AsyncSession) -> None:
        await session.execute(text("SELECT 1"))
        seen.append(event.order_id)

    app = App(name="test", routers=[router])
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'poison.db'}", create_schema=True)
    broker = InMemoryBroker()
    good = [record_of(app, cancelled(f"o{i}"), offset=i) for i in range(3)]
    nul = with_header(record_of(app, cancelled("nul"), offset=3), "ce_id", b"a\x00b")
    tombstone = record_of(app, cancelled("gone"), offset=4, value=None)
    inbox = SqlAlchemyInbox(database.engine)
    outcomes: list[str] = []
    try:
        async with app.mediator(database=database, owns_database=False) as mediator:
            processor = EventProcessor(
                mediator,
                app.registry(),
                group="g",
                inbox=inbox,
                dead_letters=broker.publisher(app.registry(), source="t"),
                claim_inbox=True,
                database=database,
            )
            await processor.process_batch(
                [good[0], nul, good[1], tombstone, good[2]], lambda _r, o: outcomes.append(o)
            )
        marked = await inbox.seen_many("g", [(r.header("ce_id") or b"").decode() for r in good])
    finally:
        await database.close()

    assert outcomes == ["handled", "dead_lettered", "handled", "dead_lettered", "handled"]
    assert seen == ["o0", "o1", "o2"]
    assert len(marked) == 3
    assert [why(d)["wirebus_error_type"] for d in broker.records(DLQ)] == [
        "UnstorableEventId",
        "EmptyValue",
    ]


# ---------------------------------------------------- replay


async def test_replay_leaves_a_dead_letter_that_was_cut_to_fit_in_the_dlq() -> None:
    app = recording_app([])
    broker = InMemoryBroker(partitions=1)
    publisher = broker.publisher(app.registry(), source="t")
    original = Record(TOPIC, 0, 1, b"k", b"\xff" * (2 * LIMIT), (("ce_id", b"1"),))
    whole = Record(TOPIC, 0, 2, b"k", b"\xff", (("ce_id", b"2"),))
    await publisher.send_records(
        [
            dead_letter_record(original, ValueError("bad"), 0, max_bytes=LIMIT),
            dead_letter_record(whole, ValueError("bad"), 0, max_bytes=LIMIT),
        ]
    )
    port = broker.consumer(group=REPLAY_GROUP, topics=[DLQ])

    report = await asyncio.wait_for(replay(port, publisher, idle_seconds=0.05), 10)

    assert report.replayed == 1
    assert [item.ce_id for item in report.skipped] == ["1"]

    [replayed] = broker.records(TOPIC)
    assert replayed.header("ce_id") == b"2"
    assert broker.committed(REPLAY_GROUP, (DLQ, 0)) == 2
