"""The outbox relay on SQLite: order, exact bytes, retention, backoff, failures, the lock.

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
from sqlalchemy import insert, select, update

from wirebus import Event
from wirebus.broker import EventEncoder, OutgoingRecord, PublishError
from wirebus.brokers.memory import InMemoryBroker
from wirebus.codec import EventRegistry
from wirebus.db import Database, outbox_table, utcnow
from wirebus.errors import ConfigurationError, LifecycleError
from wirebus.outbox import Relay, UnitOfWork
from wirebus.outbox.relay import retry_failed
from wirebus.outbox.rows import (
    SHARDS,
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


# ---------------------------------------------------------------- publishing


async def test_publishes_pending_rows_in_id_order_with_the_stored_bytes_and_deletes_them(
    tmp_path: Path,
) -> None:
    db = db_at(tmp_path)
    await emit(db, ev("a", 1), ev("b", 1), ev("a", 2))
    await emit(db, ev("c", 1), ev("b", 2))
    stored = await rows(db)
    broker = InMemoryBroker(partitions=1)  # one partition: the log shows the publishing order
    async with Relay(db, broker.publisher(REGISTRY, source="x")) as relay:
        assert await relay.relay_once() == 5
        assert relay.published == 5
        assert await relay.relay_once() == 0

    published = broker.records(TOPIC)
    assert [seq(r) for r in published] == [("a", 1), ("b", 1), ("a", 2), ("c", 1), ("b", 2)]
    for record, row in zip(published, stored, strict=True):
        assert record.key == row["key"]
        assert record.value == row["value"]
        assert record.headers == unpack_headers(row["headers"])
        assert record.header("ce_id").decode() == row["event_id"]
    assert await rows(db) == []  # retention None: published rows are deleted


async def test_per_key_order_is_kept_across_partitions_and_batches(tmp_path: Path) -> None:
    db = db_at(tmp_path)
    keys = [f"k{i}" for i in range(7)]
    for n in range(1, 6):
        await emit(db, *(ev(k, n) for k in keys))
    broker = InMemoryBroker(partitions=3)
    async with Relay(db, broker.publisher(REGISTRY, source="x"), batch_size=4) as relay:
        for _ in range(20):
            if not await relay.relay_once():
                break
    per_key: dict[str, list[int]] = {}
    for record in broker.records(TOPIC):
        key, n = seq(record)
        per_key.setdefault(key, []).append(n)
    assert per_key == {k: [1, 2, 3, 4, 5] for k in keys}
    assert await rows(db) == []


async def test_retention_marks_published_and_purges_older_rows(tmp_path: Path) -> None:
    db = db_at(tmp_path)
    await emit(db, ev("old", 1))
    long_ago = utcnow() - dt.timedelta(hours=3)
    await set_rows(db, outbox_table.c.key == b"old", status="published", published_at=long_ago)
    await emit(db, ev("recent", 1))
    await set_rows(
        db,
        outbox_table.c.key == b"recent",
        status="published",
        published_at=utcnow() - dt.timedelta(minutes=10),
    )
    await emit(db, ev("a", 1), ev("b", 1))
    broker = InMemoryBroker()
    before = utcnow()
    relay = Relay(db, broker.publisher(REGISTRY, source="x"), retention=dt.timedelta(hours=1))
    async with relay:
        assert await relay.relay_once() == 2

    left = {r["key"]: r for r in await rows(db)}
    assert set(left) == {b"recent", b"a", b"b"}  # "old" was purged, the others kept
    for key in (b"a", b"b"):
        assert left[key]["status"] == "published"
        published_at = left[key]["published_at"].replace(tzinfo=dt.UTC)
        assert before - dt.timedelta(seconds=1) <= published_at <= utcnow()
    assert sorted(r.key for r in broker.records(TOPIC)) == [b"a", b"b"]  # not old/recent again


async def test_a_late_committing_row_with_a_lower_id_is_still_published(tmp_path: Path) -> None:
    """No ``id > last_seen`` cursor: a row that appears below published ids is relayed."""
    db = db_at(tmp_path)
    await emit(db, ev("x", 1))  # a slow transaction got the lowest id ...
    await emit(db, ev("y", 1), ev("z", 1))
    reserved = (await rows(db))[0]
    async with db.engine.begin() as conn:  # ... and has not committed yet: hide its row
        await conn.execute(outbox_table.delete().where(outbox_table.c.id == reserved["id"]))
    assert all(r["id"] > reserved["id"] for r in await rows(db))
    broker = InMemoryBroker()
    async with Relay(db, broker.publisher(REGISTRY, source="x")) as relay:
        assert await relay.relay_once() == 2
        assert sorted(seq(r) for r in broker.records(TOPIC)) == [("y", 1), ("z", 1)]

        async with db.engine.begin() as conn:  # now the slow transaction commits its row
            await conn.execute(insert(outbox_table).values(**dict(reserved)))
        assert await relay.relay_once() == 1
    assert sorted(seq(r) for r in broker.records(TOPIC)) == [("x", 1), ("y", 1), ("z", 1)]
    assert await rows(db) == []


# ---------------------------------------------------------------- failures


async def test_a_refused_row_backs_off_and_blocks_only_its_key(tmp_path: Path) -> None:
    db = db_at(tmp_path)
    await emit(db, ev("bad", 1), ev("good", 1), ev("bad", 2), ev("good", 2))
    broker = InMemoryBroker()
    publisher = FakePublisher(broker)
    publisher.fail = fail_key(b"bad")
    relay = Relay(db, publisher, initial_backoff=60, max_backoff=120, max_attempts=5)
    async with relay:
        started = utcnow()
        assert await relay.relay_once() == 4
        assert sorted(seq(r) for r in broker.records(TOPIC)) == [("good", 1), ("good", 2)]
        bad = await rows(db)
        assert [seq_of_row(r) for r in bad] == [("bad", 1), ("bad", 2)]
        for row in bad:
            assert row["status"] == "pending"
            assert row["attempts"] == 1
            assert row["last_error"] == (
                "PublishError: publishing to 'test.relay.v1' failed: MessageSizeTooLargeError"
            )
            delay = (row["available_at"].replace(tzinfo=dt.UTC) - started).total_seconds()
            assert 29 <= delay <= 61  # backoff of attempt 1: between half and all of 60 s
        assert relay.failed == 0

        # later rows of the blocked key wait; other keys proceed
        publisher.fail = lambda _r: None
        await emit(db, ev("bad", 3), ev("good", 3))
        publisher.batches.clear()
        await relay.relay_once()
        assert [seq(r) for b in publisher.batches for r in b] == [("good", 3)]
        assert [seq_of_row(r) for r in await rows(db)] == [("bad", 1), ("bad", 2), ("bad", 3)]
        assert [r["attempts"] for r in await rows(db)] == [1, 1, 0]

        # once the backoff has passed, the key's rows go out in order
        await set_rows(db, outbox_table.c.key == b"bad", available_at=utcnow())
        await relay.relay_once()
    assert [seq(r) for r in broker.records(TOPIC) if r.key == b"bad"] == [
        ("bad", 1),
        ("bad", 2),
        ("bad", 3),
    ]
    assert await rows(db) == []


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


async def test_after_max_attempts_a_row_fails_and_retry_failed_requeues_it(
    tmp_path: Path,
) -> None:
    db = db_at(tmp_path)
    await emit(db, ev("bad", 1), ev("good", 1))
    broker = InMemoryBroker()
    publisher = FakePublisher(broker)
    publisher.fail = fail_key(b"bad")
    relay = Relay(db, publisher, initial_backoff=0.001, max_backoff=0.001, max_attempts=3)
    async with relay:
        for _ in range(3):
            await asyncio.sleep(0.005)  # let the (tiny) backoff pass
            await relay.relay_once()
        (row,) = await rows(db)
        assert row["status"] == "failed"
        assert row["attempts"] == 3
        assert "MessageSizeTooLargeError" in row["last_error"]
        assert relay.failed == 1
        stats = await relay.stats()
        assert (stats.pending, stats.failed, stats.oldest_pending_seconds) == (0, 1, None)

        # a failed row is not relayed again, and no longer blocks its key
        await emit(db, ev("bad", 2))
        publisher.fail = lambda _r: None
        assert await relay.relay_once() == 1
        assert [seq(r) for r in broker.records(TOPIC) if r.key == b"bad"] == [("bad", 2)]

        assert await retry_failed(db) == 1
        (row,) = await rows(db)
        assert (row["status"], row["attempts"]) == ("pending", 0)
        assert await relay.relay_once() == 1
        assert await retry_failed(db) == 0
    assert [seq(r) for r in broker.records(TOPIC) if r.key == b"bad"] == [("bad", 2), ("bad", 1)]
    assert await rows(db) == []


async def test_a_broker_outage_counts_against_no_row_and_the_relay_resumes(
    tmp_path: Path,
) -> None:
    db = db_at(tmp_path)
    await emit(db, ev("a", 1), ev("b", 1), ev("a", 2))
    broker = InMemoryBroker()
    publisher = FakePublisher(broker)
    publisher.fail = lambda r: PublishError(r.topic, "KafkaConnectionError")  # retriable
    relay = Relay(db, publisher, poll_interval=0.02, initial_backoff=0.01, max_backoff=0.05)
    await relay.start()
    task = asyncio.create_task(relay.run())
    try:
        await until(lambda: len(publisher.batches) >= 3, "three failed passes")
        for row in await rows(db):
            assert (row["status"], row["attempts"], row["last_error"]) == ("pending", 0, None)
        assert broker.records(TOPIC) == []
        assert relay.failed == 0

        publisher.fail = lambda _r: None  # the broker is back
        await until(lambda: len(broker.records(TOPIC)) == 3, "the rows after the outage")
        await until(lambda: _no_rows(db), "the outbox to drain")
    finally:
        await relay.stop()
        await asyncio.wait_for(task, WAIT)
    assert sorted(seq(r) for r in broker.records(TOPIC)) == [("a", 1), ("a", 2), ("b", 1)]


async def _no_rows(db: Database) -> bool:
    return await rows(db) == []


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


async def test_a_backing_off_key_that_fills_the_batch_does_not_starve_other_keys(
    tmp_path: Path,
) -> None:
    """Regression: at 4e409a3 the claim took the first batch_size rows whatever their backoff."""
    db = db_at(tmp_path)
    await emit(db, ev("bad", 1), ev("bad", 2), ev("bad", 3), ev("good", 1))
    broker = InMemoryBroker()
    publisher = FakePublisher(broker)
    publisher.fail = fail_key(b"bad")
    async with Relay(db, publisher, batch_size=2, initial_backoff=60) as relay:
        for _ in range(5):
            await relay.relay_once()
    assert [seq(r) for r in broker.records(TOPIC)] == [("good", 1)]


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
        await asyncio.sleep(0.2)  # several passes of the standby
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
    from wirebus.outbox import rows as outbox_rows

    first = unpack_headers(pack_headers((("ce_type", b"a.B"), ("ce_id", b"1"))))
    second = unpack_headers(pack_headers((("ce_type", b"a.B"), ("ce_id", b"2"))))
    assert first[0] is second[0]  # the repeated header is kept once
    assert first[1] == ("ce_id", b"1")
    assert second[1] == ("ce_id", b"2")
    for n in range(2 * outbox_rows._CACHE_MAX):  # a header unique per event, not known as such
        text = pack_headers((("ce_subject", f"orders/{n}".encode()),))
        assert unpack_headers(text) == (("ce_subject", f"orders/{n}".encode()),)
    assert len(outbox_rows._pairs) <= outbox_rows._CACHE_MAX
