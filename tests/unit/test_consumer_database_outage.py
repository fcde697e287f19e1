"""A database that goes away while a consumer works holds the offset; it never dead-letters.

The handler raises what the driver raises while its database is unreachable;
the record is not dead-lettered and does not use up its retry attempts: the
partition waits (offset not committed) and the record runs again once the
"database" answers. A handler's own database error still goes to the DLQ.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from shop.orders.v1 import orders_pb2
from sqlalchemy.exc import IntegrityError

from wirebus import App, Event, Router
from wirebus.brokers.memory import InMemoryBroker
from wirebus.consumer import EventProcessor
from wirebus.consumer_runner import ConsumerRunner
from wirebus.inbox import InMemoryInbox
from wirebus.retry import Backoff, Retry
from wirebus.testing import wait_until

NOW = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
TOPIC = "it.outage.v1"
GROUP = "g"
TIMEOUT = 5


class Cancelled(Event, proto=orders_pb2.OrderCancelled, key="order_id", topic=TOPIC):
    order_id: str
    reason: str
    cancelled_at: dt.datetime


class FakeDatabase:
    """What the handler writes to: raises the driver's connection error while ``down``."""

    def __init__(self) -> None:
        self.down = False
        self.rows: list[str] = []
        self.refused = 0

    async def write(self, order_id: str) -> None:
        if self.down:
            self.refused += 1
            raise asyncpg.exceptions.ConnectionDoesNotExistError(
                "connection was closed in the middle of operation"
            )
        self.rows.append(order_id)


def cancelled(i: int) -> Cancelled:
    return Cancelled(order_id=f"o-{i}", reason="r", cancelled_at=NOW)


def app_writing_to(db: FakeDatabase, error: BaseException | None = None) -> App:
    router = Router("test")

    @router.handler(retry=Retry(attempts=3, initial_delay=0.0, jitter=False))
    async def note(event: Cancelled) -> None:
        if error is not None:
            raise error
        await db.write(event.order_id)

    return App(name="test", routers=[router], events=[Cancelled])


def runner_for(app: App, broker: InMemoryBroker, *, max_delay: float = 0.02) -> ConsumerRunner:
    processor = EventProcessor(
        app.mediator(),
        app.registry(),
        group=GROUP,
        inbox=InMemoryInbox(),
        dead_letters=broker.publisher(app.registry(), source="test"),
    )
    port = broker.consumer(group=GROUP, topics=[TOPIC])
    backoff = Backoff(initial_delay=max_delay / 4, max_delay=max_delay, jitter="equal")
    return ConsumerRunner(port, processor, poll_timeout=0.05, backoff=backoff)


@contextlib.asynccontextmanager
async def running(runner: ConsumerRunner) -> AsyncIterator[asyncio.Task[None]]:
    await runner.start()
    task = asyncio.create_task(runner.run())
    try:
        yield task
    finally:
        await runner.stop()
        await asyncio.wait_for(task, TIMEOUT)


async def publish(app: App, broker: InMemoryBroker, events: list[Any]) -> None:
    await broker.publisher(app.registry(), source="test").publish_many(events)


async def test_a_record_whose_database_is_unreachable_waits_and_is_handled_once_it_is_back() -> (
    None
):
    db, broker = FakeDatabase(), InMemoryBroker(partitions=1)
    app = app_writing_to(db)
    db.down = True
    await publish(app, broker, [cancelled(i) for i in range(5)])
    runner = runner_for(app, broker)
    async with running(runner):
        await wait_until(lambda: db.refused >= 10, within=TIMEOUT)  # more than 3 attempts
        assert runner.outcomes == {}
        assert broker.committed(GROUP, (TOPIC, 0)) == 0  # the offset is held
        db.down = False
        await wait_until(lambda: runner.outcomes.get("handled") == 5, within=TIMEOUT)
    assert db.rows == [f"o-{i}" for i in range(5)]  # each once, in order
    assert broker.records(TOPIC + ".dlq") == []
    assert broker.committed(GROUP, (TOPIC, 0)) == 5


async def test_the_database_going_away_mid_stream_dead_letters_nothing() -> None:
    db, broker = FakeDatabase(), InMemoryBroker(partitions=2)
    app = app_writing_to(db)
    runner = runner_for(app, broker)
    async with running(runner):
        await publish(app, broker, [cancelled(i) for i in range(20)])
        await wait_until(lambda: runner.outcomes.get("handled") == 20, within=TIMEOUT)
        db.down = True
        await publish(app, broker, [cancelled(i) for i in range(20, 40)])
        await wait_until(lambda: db.refused >= 10, within=TIMEOUT)
        db.down = False
        await wait_until(lambda: runner.outcomes.get("handled") == 40, within=TIMEOUT)
    assert sorted(db.rows) == sorted(f"o-{i}" for i in range(40))
    assert runner.outcomes == {"handled": 40}
    assert broker.records(TOPIC + ".dlq") == []


async def test_a_handlers_own_database_error_still_goes_to_the_dlq_after_its_attempts() -> None:
    db, broker = FakeDatabase(), InMemoryBroker(partitions=1)
    duplicate = asyncpg.exceptions.UniqueViolationError("duplicate key value")
    error = IntegrityError("INSERT INTO notes ...", {}, duplicate)
    app = app_writing_to(db, error)
    await publish(app, broker, [cancelled(1)])
    runner = runner_for(app, broker)
    async with running(runner):
        await wait_until(lambda: runner.outcomes.get("dead_lettered") == 1, within=TIMEOUT)
    (dead,) = broker.records(TOPIC + ".dlq")
    headers = dict(dead.headers)
    assert headers["wirebus_error_type"] == b"IntegrityError"
    assert headers["wirebus_attempts"] == b"3"


async def test_stopping_while_the_database_is_unreachable_returns_promptly() -> None:
    db, broker = FakeDatabase(), InMemoryBroker(partitions=1)
    app = app_writing_to(db)
    db.down = True
    await publish(app, broker, [cancelled(1)])
    runner = runner_for(app, broker, max_delay=30.0)  # a long wait between attempts
    await runner.start()
    task = asyncio.create_task(runner.run())
    await wait_until(lambda: db.refused >= 1, within=TIMEOUT)
    await asyncio.sleep(0.05)  # let the runner enter its wait before an attempt
    started = time.monotonic()
    await runner.stop()
    await asyncio.wait_for(task, TIMEOUT)
    assert time.monotonic() - started < 1.0
    assert runner.outcomes == {}
    assert broker.committed(GROUP, (TOPIC, 0)) == 0
