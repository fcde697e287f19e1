"""The outbox relay on PostgreSQL, publishing to a real Kafka broker.

Every test gets a database of its own (``CREATE DATABASE it_<hex>``, dropped
at the end), so relays count only each other in ``pg_stat_activity`` and no
test sees another's rows; and a topic of its own, by registering an
OrderPlaced dataclass with ``EventRegistry.add(..., topic=fresh)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from shop.orders.v1 import orders_pb2
from sqlalchemy import func, select

from tests.integration.conftest import plain_dsn, read_records
from wirebus import Event
from wirebus.broker import EventEncoder
from wirebus.codec import EventRegistry
from wirebus.db import Database, outbox_table, utcnow
from wirebus.kafka import KafkaEventPublisher, ensure_topics
from wirebus.migrations import WIREBUS_VERSION_TABLE, upgrade
from wirebus.outbox import Relay, UnitOfWork
from wirebus.outbox._postgres import PgLease, claim_statement
from wirebus.outbox.relay import retry_failed
from wirebus.outbox.rows import SHARDS, row_from_record
from wirebus.testing.outbox_suite import OutboxHarness, OutboxStoreSuite, SqlOutboxHarness

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


class Placed(Event, proto=orders_pb2.OrderPlaced, key="order_id"):
    order_id: str
    customer_id: str = ""
    total_cents: int = 0
    placed_at: dt.datetime = T0


def ev(key: str, n: int) -> Placed:
    """The ``n``-th event of aggregate ``key`` (``n`` travels as ``total_cents``)."""
    return Placed(order_id=key, customer_id=f"c-{n}", total_cents=n)


def seq(value: bytes) -> tuple[str, int]:
    message = orders_pb2.OrderPlaced.FromString(value)
    return message.order_id, message.total_cents


class Env:
    """One test's database, topic, encoder and Kafka publisher; closes what it opened."""

    def __init__(self, url: str, bootstrap: str, topic: str) -> None:
        self.url = url
        self.bootstrap = bootstrap
        self.topic = topic
        self.registry = EventRegistry()
        self.registry.add(Placed, topic=topic)
        self.encoder = EventEncoder(self.registry, source="it-relay")
        self.databases: list[Database] = []
        self.publishers: list[KafkaEventPublisher] = []
        self.relays: list[tuple[Relay, asyncio.Task[None] | None]] = []
        self.db = self.database()

    def database(self) -> Database:
        db = Database(self.url, create_schema=True, pool_size=5)
        self.databases.append(db)
        return db

    async def publisher(self, **options: Any) -> KafkaEventPublisher:
        publisher = KafkaEventPublisher(self.bootstrap, self.registry, source="it-relay", **options)
        await publisher.start()
        self.publishers.append(publisher)
        return publisher

    async def relay(
        self,
        *,
        run: bool = True,
        db: Database | None = None,
        publisher: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Relay:
        """A started relay (its own Kafka producer), running in a task unless ``run=False``."""
        relay = Relay(db or self.database(), await self.publisher(**(publisher or {})), **kwargs)
        await relay.start()
        task = asyncio.create_task(relay.run()) if run else None
        self.relays.append((relay, task))
        return relay

    async def stop_relay(self, relay: Relay) -> None:
        for r, task in self.relays:
            if r is relay:
                await r.stop()
                if task is not None:
                    await asyncio.wait_for(task, 30)
                else:
                    await r.close()

    async def emit(self, *events: Placed) -> None:
        """Commit ``events`` as outbox rows, as a handler's unit of work does (with NOTIFY)."""
        await self.db.start()
        uow = UnitOfWork(self.db, self.encoder)
        try:
            await uow.commit(list(events))
        finally:
            await uow.close()

    async def rows(self) -> list[Any]:
        async with self.db.engine.connect() as conn:
            query = select(outbox_table).order_by(outbox_table.c.id)
            return list((await conn.execute(query)).mappings().all())

    async def pending(self) -> int:
        async with self.db.engine.connect() as conn:
            query = select(func.count()).where(outbox_table.c.status == "pending")
            return int((await conn.execute(query)).scalar_one())

    async def drained(self) -> bool:
        return await self.pending() == 0

    async def close(self) -> None:
        for relay, task in self.relays:
            await relay.stop()
            if task is not None:
                try:
                    await asyncio.wait_for(task, 30)
                except TimeoutError:  # pragma: no cover - a hung relay must not hang teardown
                    task.cancel()
            await relay.close()
        for publisher in self.publishers:
            await publisher.stop()
        for db in self.databases:
            await db.close()


@pytest.fixture
async def env(pg_url: str, bootstrap: str, fresh: str) -> AsyncIterator[Env]:
    topic = f"{fresh}.orders"
    await ensure_topics(bootstrap, [topic], partitions=3)
    environment = Env(pg_url, bootstrap, topic)
    await environment.db.start()
    try:
        yield environment
    finally:
        await environment.close()


async def until(predicate: Callable[[], Any], what: str, within: float = 20) -> float:
    """Wait for ``predicate`` (sync or async); the seconds it took."""
    started = time.monotonic()
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - started
        if time.monotonic() - started > within:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.05)


def per_key(records: list[Any]) -> dict[str, list[int]]:
    found: dict[str, list[int]] = defaultdict(list)
    for record in records:
        key, n = seq(record.value)
        found[key].append(n)
    return dict(found)


# ---------------------------------------------------------------- tests


async def test_publishes_the_stored_records_in_per_key_order(env: Env) -> None:
    keys = [f"order-{i}" for i in range(6)]
    for n in range(1, 9):
        await env.emit(*(ev(k, n) for k in keys))
    stored = {r["event_id"]: r for r in await env.rows()}
    relay = await env.relay(poll_interval=0.2, batch_size=10)

    await until(env.drained, "the outbox to drain")
    assert await env.rows() == []
    assert relay.published == len(stored)

    records = await read_records(env.bootstrap, env.topic, len(stored), grace=1.0)
    assert len(records) == len(stored)
    assert per_key(records) == {k: list(range(1, 9)) for k in keys}
    partitions: dict[bytes, set[int]] = defaultdict(set)
    for record in records:
        headers = {k: v.decode() for k, v in record.headers}
        row = stored[headers["ce_id"]]
        assert (record.key, record.value) == (row["key"], row["value"])
        assert headers["ce_type"] == "shop.orders.v1.OrderPlaced"
        partitions[record.key].add(record.partition)
    assert all(len(p) == 1 for p in partitions.values())  # one key, one partition


async def test_notify_wakes_the_relay_long_before_its_poll_interval(env: Env) -> None:
    relay = await env.relay(poll_interval=30)
    await until(lambda: relay.shards == frozenset(range(SHARDS)), "the relay's leases")
    await asyncio.sleep(0.5)  # its first (empty) pass is over: it sleeps for 30 s now

    started = time.monotonic()
    await env.emit(ev("woken", 1))
    await until(env.drained, "the NOTIFY-woken relay", within=10)
    assert time.monotonic() - started < 5

    records = await read_records(env.bootstrap, env.topic, 1, grace=1.0)
    assert [seq(r.value) for r in records] == [("woken", 1)]


async def test_when_one_relay_closes_the_other_takes_over_its_shards(env: Env) -> None:
    """A relay closed (or recovering via close+reconnect) while its process's pool lives on."""
    first = await env.relay(poll_interval=0.2)
    second = await env.relay(poll_interval=0.2)
    await until(
        lambda: first.shards and second.shards and len(first.shards | second.shards) == SHARDS,
        "the split",
    )
    await env.stop_relay(first)  # run() ends and closes the relay; its database stays open
    assert first.shards == frozenset()

    await until(
        lambda: second.shards == frozenset(range(SHARDS)),
        "the survivor to take every shard",
        within=5,
    )
    await env.emit(*(ev(f"after-{i}", 1) for i in range(20)))
    await until(env.drained, "the survivor to publish")
    records = await read_records(env.bootstrap, env.topic, 20, grace=1.0)
    assert len(records) == 20


async def test_when_one_relay_and_its_database_close_the_other_takes_over(env: Env) -> None:
    """As above, with the closed relay's connection pool disposed of (its process ended)."""
    first_db = env.database()
    first = await env.relay(poll_interval=0.2, db=first_db)
    second = await env.relay(poll_interval=0.2)
    await until(
        lambda: first.shards and second.shards and len(first.shards | second.shards) == SHARDS,
        "the split",
    )
    await env.stop_relay(first)
    await first_db.close()
    await until(
        lambda: second.shards == frozenset(range(SHARDS)), "the survivor to take every shard"
    )


async def test_a_row_locked_by_an_open_transaction_is_skipped_not_waited_on(env: Env) -> None:
    await env.emit(ev("locked", 1), ev("free", 1))
    locked_id = next(r["id"] for r in await env.rows() if r["key"] == b"locked")

    holder = await asyncpg.connect(plain_dsn(env.url))
    transaction = holder.transaction()
    await transaction.start()
    try:
        await holder.execute("SELECT id FROM wirebus_outbox WHERE id = $1 FOR UPDATE", locked_id)
        await env.relay(poll_interval=0.1)
        await until(lambda: _keys_left(env, [b"locked"]), "the unlocked row", within=10)
    finally:
        await transaction.rollback()
        await holder.close()
    await until(env.drained, "the row once its lock is gone")
    records = await read_records(env.bootstrap, env.topic, 2, grace=1.0)
    assert sorted(seq(r.value) for r in records) == [("free", 1), ("locked", 1)]


async def _keys_left(env: Env, keys: list[bytes]) -> bool:
    return sorted(r["key"] for r in await env.rows()) == sorted(keys)


@pytest.mark.parametrize("retention", [None, dt.timedelta(hours=1)], ids=["deleting", "keeping"])
async def test_a_record_too_large_backs_off_blocks_only_its_key_then_fails_for_good(
    env: Env, retention: dt.timedelta | None
) -> None:
    """Kafka refuses the record (larger than the producer's limit): the PostgreSQL path."""
    relay = await env.relay(
        run=False,
        retention=retention,
        publisher={"max_batch_bytes": 16 * 1024},
        initial_backoff=60,
        max_backoff=60,
        max_attempts=2,
    )
    huge = Placed(order_id="bad", customer_id="x" * 64 * 1024, total_cents=1)
    await env.emit(huge, ev("good", 1), ev("bad", 2), ev("good", 2))

    started = utcnow()
    assert await relay.relay_once() == 4
    by_key = defaultdict(list)
    for row in await env.rows():
        if row["status"] == "pending":
            by_key[row["key"]].append(row)
    first, second = by_key[b"bad"]
    assert not by_key[b"good"]
    assert first["attempts"] == 1
    assert "MessageSizeTooLargeError" in first["last_error"]
    assert 29 <= (first["available_at"] - started).total_seconds() <= 61
    assert (second["attempts"], second["last_error"]) == (0, None)  # held back, not tried

    # the key waits behind its backoff; other keys go on
    await env.emit(ev("bad", 3), ev("good", 3))
    assert await relay.relay_once() == 1
    async with env.db.engine.begin() as conn:  # the backoff is over
        await conn.execute(outbox_table.update().values(available_at=utcnow()))
    await relay.relay_once()
    failed = [r for r in await env.rows() if r["status"] == "failed"]
    assert [(r["event_id"], r["attempts"]) for r in failed] == [(first["event_id"], 2)]
    assert relay.failed == 1

    # failed for good: it no longer holds its key back
    assert await relay.relay_once() == 2
    records = await read_records(env.bootstrap, env.topic, 5, grace=1.0)
    assert per_key(records) == {"good": [1, 2, 3], "bad": [2, 3]}

    assert await retry_failed(env.db) == 1
    (requeued,) = [r for r in await env.rows() if r["status"] != "published"]
    assert (requeued["status"], requeued["attempts"]) == ("pending", 0)
    assert await relay.relay_once() == 1  # refused again: attempt 1 of a fresh count
    (again,) = [r for r in await env.rows() if r["status"] != "published"]
    assert (again["status"], again["attempts"]) == ("pending", 1)


# ---------------------------------------------------------------- the conformance suite


class TestPostgresOutboxStore(OutboxStoreSuite):
    """The OutboxStore suite on PostgreSQL (a fresh database per test), both claim paths."""

    @pytest.fixture
    async def outbox_harness(self, pg_url: str) -> AsyncIterator[OutboxHarness]:
        harness = SqlOutboxHarness(pg_url)
        await harness.start()
        try:
            yield harness
        finally:
            await harness.close()


# ---------------------------------------------------------------- the NOTIFY trigger


async def _triggers(url: str) -> list[str]:
    conn = await asyncpg.connect(plain_dsn(url))
    try:
        rows = await conn.fetch(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = to_regclass('wirebus_outbox')"
            " AND NOT tgisinternal"
        )
        return [r[0] for r in rows]
    finally:
        await conn.close()


async def _notified_on_insert(env: Env, db: Database, uow_notifies: bool) -> bool:
    """Whether a LISTENer hears a commit of ``db``'s unit of work (NOTIFY or trigger)."""
    heard = asyncio.Event()
    listener = await asyncpg.connect(plain_dsn(env.url))
    try:
        await listener.add_listener("wirebus_outbox", lambda *_: heard.set())
        uow = UnitOfWork(db, env.encoder)
        try:
            await uow.commit([ev("heard", 1)])
        finally:
            await uow.close()
        assert db.outbox_notifies is not uow_notifies
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(heard.wait(), 5)
        return heard.is_set()
    finally:
        await listener.close()


async def test_inserting_outbox_rows_notifies_the_relays_from_the_server(env: Env) -> None:
    """create_all makes the trigger: the unit of work sends no NOTIFY of its own."""
    assert await _triggers(env.url) == ["wirebus_outbox_notify"]
    assert env.db.outbox_notifies
    assert await _notified_on_insert(env, env.db, uow_notifies=False)


async def test_a_schema_without_the_trigger_is_notified_by_the_unit_of_work(env: Env) -> None:
    """A database not yet upgraded: the unit of work still wakes the relays, and
    ``wirebus db upgrade`` adds the trigger."""
    conn = await asyncpg.connect(plain_dsn(env.url))
    try:
        await conn.execute("DROP TRIGGER wirebus_outbox_notify ON wirebus_outbox")
        await conn.execute(f"UPDATE {WIREBUS_VERSION_TABLE} SET version_num = '0002'")
    except asyncpg.UndefinedTableError:  # create_all made the tables: no version row yet
        pass
    finally:
        await conn.close()
    old = Database(env.url)
    env.databases.append(old)
    await old.start()
    assert await _notified_on_insert(env, old, uow_notifies=True)

    await upgrade(env.url)
    assert await _triggers(env.url) == ["wirebus_outbox_notify"]
    upgraded = Database(env.url)
    env.databases.append(upgraded)
    await upgraded.start()
    assert await _notified_on_insert(env, upgraded, uow_notifies=False)
    await upgrade(env.url)  # again: nothing to do, nothing doubled
    assert await _triggers(env.url) == ["wirebus_outbox_notify"]


# ---------------------------------------------------------------- the claim's plan


def _plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes.extend(_plan_nodes(child))
    return nodes


@pytest.mark.parametrize("analyzed", [False, True], ids=["no-statistics", "analyzed"])
@pytest.mark.parametrize("delete", [True, False], ids=["deleting", "keeping"])
async def test_a_claim_walks_the_pending_ids_and_stops_after_its_batch(
    env: Env, analyzed: bool, delete: bool
) -> None:
    """However long the backlog and whatever the planner knows: no sort of the backlog,
    no scan of the table; the rows read are the batch."""
    now = utcnow()
    rows = [row_from_record(env.encoder.record(ev(f"k{i % 50}", i)), now) for i in range(5000)]
    async with env.db.engine.begin() as conn:
        await conn.execute(outbox_table.insert(), rows)
    lease = await PgLease.connect(plain_dsn(env.url))
    try:
        if analyzed:
            await lease.connection.execute("ANALYZE wirebus_outbox")
        sql, args = claim_statement(set(range(SHARDS)), utcnow(), 100, delete=delete)
        transaction = lease.transaction()
        await transaction.start()
        try:
            (explained,) = await lease.connection.fetchrow(
                f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *args
            )
        finally:
            await transaction.rollback()
    finally:
        await lease.close()
    nodes = _plan_nodes(json.loads(explained)[0]["Plan"])
    kinds = [n["Node Type"] for n in nodes]
    assert "Sort" not in kinds, kinds
    assert "Seq Scan" not in kinds, kinds
    scans = [n for n in nodes if n.get("Index Name") == "wirebus_outbox_pending"]
    assert scans, kinds
    assert all(n["Actual Rows"] <= 100 for n in scans), scans


# ---------------------------------------------------------------- waking and backing off


class Hooked:
    """A publisher that runs ``before`` on each send, then sends (or fails, if it says so)."""

    def __init__(self, inner: KafkaEventPublisher) -> None:
        self.inner = inner
        self.calls = 0
        self.before: Callable[[], Any] = lambda: None
        self.broker_away = False

    async def send_records_settled(self, records: Any) -> list[BaseException | None]:
        from wirebus.broker import PublishError

        self.calls += 1
        result = self.before()
        if asyncio.iscoroutine(result):
            await result
        records = list(records)
        if self.broker_away:
            errors: list[BaseException | None] = []
            for record in records:
                error = PublishError(record.topic, "KafkaConnectionError: broker away")
                error.retriable = True
                errors.append(error)
            return errors
        return await self.inner.send_records_settled(records)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_rows_committed_while_a_pass_runs_wake_the_next_pass(env: Env) -> None:
    """Their NOTIFY arrives during the pass; it is not lost to the 30 s poll."""
    hooked = Hooked(await env.publisher())
    relay = Relay(env.database(), hooked, poll_interval=30)  # type: ignore[arg-type]
    await relay.start()
    task = asyncio.create_task(relay.run())
    env.relays.append((relay, task))

    async def commit_another_once() -> None:
        hooked.before = lambda: None
        await env.emit(ev("during", 2))  # committed (and notified) mid-pass

    hooked.before = commit_another_once
    await env.emit(ev("during", 1))
    await until(env.drained, "both rows, the second one without waiting for the poll", 10)
    records = await read_records(env.bootstrap, env.topic, 2, grace=1.0)
    assert [seq(r.value) for r in records] == [("during", 1), ("during", 2)]


async def test_while_the_broker_is_away_new_rows_do_not_cut_the_backoff_short(env: Env) -> None:
    hooked = Hooked(await env.publisher())
    hooked.broker_away = True
    relay = Relay(  # type: ignore[arg-type]
        env.database(), hooked, poll_interval=0.05, initial_backoff=2, max_backoff=2
    )
    await relay.start()
    task = asyncio.create_task(relay.run())
    env.relays.append((relay, task))
    await env.emit(ev("away", 0))
    await until(lambda: hooked.calls >= 1, "the first attempt")
    started = hooked.calls
    for n in range(1, 21):  # 20 commits, each notifying the relay, over ~2 s
        await env.emit(ev("away", n))
        await asyncio.sleep(0.1)
    assert hooked.calls - started <= 3, f"{hooked.calls - started} attempts in 2 s of backoff"
    hooked.broker_away = False
    await until(env.drained, "every row once the broker is back", 15)
    records = await read_records(env.bootstrap, env.topic, 21, grace=1.0)
    assert [seq(r.value) for r in records] == [("away", n) for n in range(21)]
