"""The outbox relay on SQLite: what only SQLite or the relay's policy shows.

Order, late commits, backoff per key, failed rows, retention and outages are
proved for every store by the conformance suite (tests/unit/test_outbox_stores.py);
here: a Database given to Relay, the relay's backoff policy, the file lock,
the run loop's lifecycle and the stored row format.

Rows are written by a :class:`UnitOfWork` (exactly what a handler's commit
writes); the relay publishes them to an :class:`InMemoryBroker` or to a fake
publisher that fails chosen records. Passes are driven with ``relay_once``;
where the ``run`` loop itself is under test, poll intervals are small and
every wait is bounded.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from shop.orders.v1 import orders_pb2
from sqlalchemy import select, update

from wirebus import Event
from wirebus.broker import EventEncoder, OutgoingRecord, PublishError
from wirebus.brokers.memory import InMemoryBroker
from wirebus.codec import EventRegistry
from wirebus.db import Database, outbox_table, utcnow
from wirebus.errors import ConfigurationError, LifecycleError
from wirebus.outbox import InMemoryOutboxStore, Relay, SqliteOutboxStore, UnitOfWork
from wirebus.outbox.relay import outbox_stats, outbox_store_for, retry_failed
from wirebus.outbox.rows import (
    SHARDS,
    HeaderReader,
    pack_headers,
    records_from_rows,
    row_from_record,
    unpack_headers,
)

TOPIC = "test.relay.v1"
T0 = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
WAIT = 5.0  # upper bound of every wait on the run loop


class Placed(Event, proto=orders_pb2.OrderPlaced, key="order_id", topic=TOPIC):
    order_id: str
    customer_id: str = ""
    total_cents: int = 0
    placed_at: dt.datetime = T0


REGISTRY = EventRegistry()
REGISTRY.add(Placed)
ENCODER = EventEncoder(REGISTRY, source="relay-test")


def ev(key: str, n: int) -> Placed:
    """The ``n``-th event of aggregate ``key`` (``n`` travels as ``total_cents``)."""
    return Placed(order_id=key, customer_id=f"c-{n}", total_cents=n)


def seq(record: Any) -> tuple[str, int]:
    message = orders_pb2.OrderPlaced.FromString(record.value)
    return message.order_id, message.total_cents


_OPEN: list[Database] = []


def db_at(tmp_path: Path, name: str = "relay.db") -> Database:
    """A database on a file under ``tmp_path``, disposed of when the test ends."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/{name}", create_schema=True)
    _OPEN.append(db)
    return db


@pytest.fixture(autouse=True)
async def _close_databases() -> AsyncIterator[None]:
    yield
    while _OPEN:
        await _OPEN.pop().close()


async def emit(db: Database, *events: Placed) -> None:
    """Commit ``events`` as outbox rows, as a handler's unit of work does."""
    await db.start()
    uow = UnitOfWork(db, ENCODER)
    try:
        await uow.commit(list(events))
    finally:
        await uow.close()


async def rows(db: Database) -> list[Any]:
    async with db.engine.connect() as conn:
        query = select(outbox_table).order_by(outbox_table.c.id)
        return list((await conn.execute(query)).mappings().all())


async def set_rows(db: Database, where: Any, **values: Any) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(update(outbox_table).where(where).values(**values))


class FakePublisher:
    """Publishes to a broker, except the records ``fail(record)`` returns an error for."""

    def __init__(self, broker: InMemoryBroker) -> None:
        self.broker = broker
        self.fail: Callable[[OutgoingRecord], BaseException | None] = lambda _r: None
        self.batches: list[list[OutgoingRecord]] = []

    async def publish(self, event: Any, *, subject: str | None = None) -> None:
        raise NotImplementedError

    async def publish_many(self, events: Any) -> None:
        raise NotImplementedError

    async def send_records(self, records: Sequence[OutgoingRecord]) -> None:
        raise NotImplementedError

    async def send_records_settled(
        self, records: Sequence[OutgoingRecord]
    ) -> list[BaseException | None]:
        self.batches.append(list(records))
        results = [self.fail(r) for r in records]
        await self.broker.append([r for r, e in zip(records, results, strict=True) if e is None])
        return results


def refused(topic: str = TOPIC) -> PublishError:
    error = PublishError(topic, "MessageSizeTooLargeError")
    error.retriable = False
    return error


def fail_key(key: bytes) -> Callable[[OutgoingRecord], BaseException | None]:
    return lambda r: refused(r.topic) if r.key == key else None


async def until(predicate: Callable[[], Any], what: str, within: float = WAIT) -> None:
    deadline = time.monotonic() + within
    while not await _call(predicate):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.01)


async def _call(predicate: Callable[[], Any]) -> Any:
    result = predicate()
    return await result if asyncio.iscoroutine(result) else result


# ---------------------------------------------------------------- the store of a Database
# (what the stores share is proved by the conformance suite: tests/unit/test_outbox_stores.py)


async def test_a_relay_given_a_database_relays_it_through_its_sqlite_store(
    tmp_path: Path,
) -> None:
    db = db_at(tmp_path)
    await emit(db, ev("a", 1), ev("b", 1))
    broker = InMemoryBroker(partitions=1)
    relay = Relay(db, broker.publisher(REGISTRY, source="x"), retention=dt.timedelta(hours=1))
    assert isinstance(relay.store, SqliteOutboxStore)
    assert isinstance(outbox_store_for(db), SqliteOutboxStore)
    async with relay:
        assert await relay.relay_once() == 2
    assert [seq(r) for r in broker.records(TOPIC)] == [("a", 1), ("b", 1)]
    assert [r["status"] for r in await rows(db)] == ["published", "published"]  # retention


async def test_outbox_stats_and_retry_failed_of_a_database_still_work(tmp_path: Path) -> None:
    db = db_at(tmp_path)
    await emit(db, ev("a", 1), ev("b", 1))
    await set_rows(db, outbox_table.c.key == b"a", status="failed", attempts=10)
    stats = await outbox_stats(db)
    assert (stats.pending, stats.failed) == (1, 1)
    assert await retry_failed(db) == 1
    assert [(r["status"], r["attempts"]) for r in await rows(db)] == [("pending", 0)] * 2


def test_retention_belongs_to_the_store_when_a_store_is_given() -> None:
    publisher = InMemoryBroker().publisher(REGISTRY, source="x")
    with pytest.raises(ConfigurationError, match="retention"):
        Relay(InMemoryOutboxStore(), publisher, retention=dt.timedelta(hours=1))


# ---------------------------------------------------------------- failures


def seq_of_row(row: Any) -> tuple[str, int]:
    message = orders_pb2.OrderPlaced.FromString(row["value"])
    return message.order_id, message.total_cents


async def test_backoff_grows_with_attempts_up_to_the_ceiling(tmp_path: Path) -> None:
    db = db_at(tmp_path)
    await emit(db, ev("bad", 1))
    publisher = FakePublisher(InMemoryBroker())
    publisher.fail = fail_key(b"bad")
    relay = Relay(db, publisher, initial_backoff=10, max_backoff=40, max_attempts=10)
    async with relay:
        delays = []
        for attempt in range(1, 6):
            now = utcnow()
            assert await relay.relay_once() == 1
            (row,) = await rows(db)
            assert row["attempts"] == attempt
            delays.append((row["available_at"].replace(tzinfo=dt.UTC) - now).total_seconds())
            await set_rows(db, outbox_table.c.id == row["id"], available_at=utcnow())
    ceilings = [10, 20, 40, 40, 40]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 - 0.5 <= delay <= ceiling + 0.5


async def test_a_single_failure_in_a_batch_is_not_an_outage(tmp_path: Path) -> None:
    """A retriable error on some rows while others succeed: those rows wait, spending no attempt.

    (Counting them would park rows as failed during a broker restart.)
    """
    db = db_at(tmp_path)
    await emit(db, ev("a", 1), ev("b", 1))
    publisher = FakePublisher(InMemoryBroker())
    publisher.fail = lambda r: PublishError(r.topic, "leader moved") if r.key == b"a" else None
    async with Relay(db, publisher, initial_backoff=60) as relay:
        assert await relay.relay_once() == 2
    (row,) = await rows(db)
    assert (seq_of_row(row), row["attempts"], row["status"]) == (("a", 1), 0, "pending")
    assert "leader moved" in row["last_error"]
    assert row["available_at"].replace(tzinfo=dt.UTC) > dt.datetime.now(dt.UTC)  # backing off


@pytest.mark.xfail(
    strict=True,
    reason="KNOWN LIMIT: the relay sends a batch's ready rows at once; a record the broker"
    " refuses AFTER sending, while it accepts later records of the same key, is overtaken by"
    " them. Refusals at send() (too large) hold the key back (KafkaEventPublisher); keeping"
    " order here too needs one in-flight row per key, a throughput trade not made yet",
)
async def test_a_row_refused_on_its_own_does_not_let_later_rows_of_its_key_overtake_it(
    tmp_path: Path,
) -> None:
    db = db_at(tmp_path)
    await emit(db, ev("a", 1), ev("a", 2))
    first = (await rows(db))[0]["event_id"].encode()
    broker = InMemoryBroker()
    publisher = FakePublisher(broker)
    publisher.fail = lambda r: refused() if dict(r.headers)["ce_id"] == first else None
    async with Relay(db, publisher, initial_backoff=0.001, max_backoff=0.001) as relay:
        await relay.relay_once()
        publisher.fail = lambda _r: None
        await asyncio.sleep(0.005)
        await relay.relay_once()
        await relay.relay_once()
    # what a consumer of the key sees first must be the key's first event
    assert [seq(r) for r in broker.records(TOPIC)][:1] == [("a", 1)]


# ---------------------------------------------------------------- stats


async def test_stats_count_pending_and_failed_rows_and_the_oldest_pending_age(
    tmp_path: Path,
) -> None:
    db = db_at(tmp_path)
    relay = Relay(db, InMemoryBroker().publisher(REGISTRY, source="x"))
    await relay.start()
    try:
        stats = await relay.stats()
        assert (stats.pending, stats.failed, stats.oldest_pending_seconds) == (0, 0, None)

        await emit(db, ev("a", 1), ev("b", 1), ev("c", 1), ev("d", 1))
        ids = [r["id"] for r in await rows(db)]
        await set_rows(db, outbox_table.c.id == ids[1], created_at=utcnow() - dt.timedelta(45))
        await set_rows(db, outbox_table.c.id == ids[2], created_at=utcnow() - dt.timedelta(90))
        await set_rows(db, outbox_table.c.id == ids[2], status="failed")
        await set_rows(db, outbox_table.c.id == ids[3], status="published")
        stats = await relay.stats()
        assert stats.pending == 2
        assert stats.failed == 1
        assert stats.oldest_pending_seconds is not None
        assert 45 * 86400 <= stats.oldest_pending_seconds < 45 * 86400 + 60
    finally:
        await relay.close()


# ---------------------------------------------------------------- lifecycle and the lock


async def test_a_second_relay_on_the_same_file_stands_by_until_the_first_closes(
    tmp_path: Path,
) -> None:
    first_db, second_db = db_at(tmp_path), db_at(tmp_path)
    broker = InMemoryBroker()
    first = Relay(first_db, broker.publisher(REGISTRY, source="x"), poll_interval=0.02)
    second = Relay(second_db, broker.publisher(REGISTRY, source="x"), poll_interval=0.02)
    await first.start()
    await second.start()
    assert first.shards == frozenset(range(SHARDS))
    assert second.shards == frozenset()
    task = asyncio.create_task(second.run())
    try:
        await emit(first_db, ev("a", 1), ev("b", 1))
        after = second.passes
        await until(lambda: second.passes >= after + 3, "several passes of the standby")
        assert second.shards == frozenset()
        assert broker.records(TOPIC) == []
        assert len(await rows(first_db)) == 2

        assert await first.relay_once() == 2
        await emit(first_db, ev("a", 2))
        await first.close()  # releases the lock: the standby takes over

        await until(lambda: second.shards == frozenset(range(SHARDS)), "the takeover")
        await until(lambda: len(broker.records(TOPIC)) == 3, "the standby to publish")
    finally:
        await second.stop()
        await asyncio.wait_for(task, WAIT)
    assert sorted(seq(r) for r in broker.records(TOPIC)) == [("a", 1), ("a", 2), ("b", 1)]
    assert second.shards == frozenset()  # run() closes the relay when it stops


async def test_the_run_loop_polls_new_rows_and_stops_cleanly(tmp_path: Path) -> None:
    db = db_at(tmp_path)
    broker = InMemoryBroker()
    relay = Relay(db, broker.publisher(REGISTRY, source="x"), poll_interval=0.02)
    with pytest.raises(LifecycleError):
        await relay.run()
    await relay.start()
    task = asyncio.create_task(relay.run())
    try:
        for n in range(1, 4):
            await emit(db, ev("a", n))
            await until(lambda n=n: len(broker.records(TOPIC)) == n, f"row {n}")
    finally:
        await relay.stop()
        await asyncio.wait_for(task, WAIT)
    assert [seq(r) for r in broker.records(TOPIC)] == [("a", 1), ("a", 2), ("a", 3)]
    with pytest.raises(LifecycleError):
        await relay.start()


def test_invalid_settings_are_refused(tmp_path: Path) -> None:
    db = db_at(tmp_path)
    publisher = InMemoryBroker().publisher(REGISTRY, source="x")
    for kwargs in ({"batch_size": 0}, {"max_attempts": 0}, {"poll_interval": 0}):
        with pytest.raises(ConfigurationError):
            Relay(db, publisher, **kwargs)


def test_rows_keep_exactly_the_encoded_record() -> None:
    record = ENCODER.record(ev("k", 1))
    row = row_from_record(record, T0)
    assert row["event_id"] == dict(record.headers)["ce_id"].decode()
    assert (row["topic"], row["key"], row["value"]) == (TOPIC, b"k", record.value)
    assert row["created_at"] == row["available_at"] == T0
    assert 0 <= row["shard"] < SHARDS
    assert row_from_record(ENCODER.record(ev("k", 2)), T0)["shard"] == row["shard"]


@pytest.mark.parametrize(
    "headers",
    [
        (("ce_id", b"1"), ("ce_type", b"a.b.C"), ("empty", b"")),
        (),
        (("ce_subject", "naïve/ü".encode()),),
        (("odd", b"has\x1fthe separator"), ("ce_id", b"2")),  # stored as JSON
        (("odd", b"\x1estarts with the marker"),),
        (("na\x1fme", b"v"),),
    ],
    ids=[
        "cloudevents",
        "none",
        "utf-8",
        "separator-in-value",
        "marker-in-value",
        "separator-in-name",
    ],
)
def test_stored_headers_read_back_exactly(headers: tuple[tuple[str, bytes], ...]) -> None:
    text = pack_headers(headers)
    assert unpack_headers(text) == headers
    row = (1, "e", TOPIC, b"k", b"v", text, 0)
    assert records_from_rows([row]) == [OutgoingRecord(TOPIC, b"k", b"v", headers)]


async def test_a_row_written_with_json_headers_by_an_older_version_is_relayed(
    tmp_path: Path,
) -> None:
    db = db_at(tmp_path)
    record = ENCODER.record(ev("old", 1))
    legacy = row_from_record(record, utcnow())
    legacy["headers"] = json.dumps([[k, v.decode()] for k, v in record.headers])
    await db.start()
    async with db.engine.begin() as conn:
        await conn.execute(outbox_table.insert(), legacy)
    await emit(db, ev("old", 2))
    broker = InMemoryBroker()
    async with Relay(db, FakePublisher(broker)) as relay:
        assert await relay.relay_once() == 2
    first, second = broker.records(TOPIC)
    assert (first.value, first.headers) == (record.value, record.headers)
    assert seq(second) == ("old", 2)


def test_headers_read_back_share_repeated_pairs_and_the_sharing_is_bounded() -> None:
    reader = HeaderReader(limit=64)
    first = reader.headers(pack_headers((("ce_type", b"a.B"), ("ce_id", b"1"))))
    second = reader.headers(pack_headers((("ce_type", b"a.B"), ("ce_id", b"2"))))
    assert first[0] is second[0]  # the repeated header is kept once
    assert first[1] == ("ce_id", b"1")
    assert second[1] == ("ce_id", b"2")
    assert reader.size == 1  # ce_id changes with every event: never kept
    for n in range(2 * reader.limit):  # a header unique per event, not known as such
        text = pack_headers((("ce_subject", f"orders/{n}".encode()),))
        assert reader.headers(text) == (("ce_subject", f"orders/{n}".encode()),)
    assert reader.size == reader.limit
    assert HeaderReader().headers(text) == unpack_headers(text)  # the same headers either way
