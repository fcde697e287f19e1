"""One pipeline around every handler, and one sink for every emitted event.

The pipeline's stages wrap requests, whole streams and event handlers alike;
the unit of work is a stage the app adds when it has a database; an event
declared as travelling leaves the process from every kind of handler.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from shop.orders.v1 import orders_pb2
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from wirebus import App, CallNext, Command, Context, Event, Query, Router, Stage, current_context
from wirebus.brokers.memory import InMemoryBroker
from wirebus.db import Database, outbox_table
from wirebus.errors import UnregisteredEvent
from wirebus.inbox import InboxClaim
from wirebus.runtime import Runtime
from wirebus.settings import Settings
from wirebus.testing import wait_until

TOPIC = "test.pipeline.v1"
NOW = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)

state = MetaData()
notes = Table(
    "pipeline_notes",
    state,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("text", String(100), nullable=False),
)


class Placed(Event, proto=orders_pb2.OrderPlaced, key="order_id", topic=TOPIC):
    order_id: str
    customer_id: str = "c-1"
    total_cents: int = 100
    placed_at: dt.datetime = NOW


class Stray(Event, proto=orders_pb2.OrderCancelled, key="order_id", topic=TOPIC):
    """Bound to protobuf (so it travels) but never registered with the app."""

    order_id: str
    reason: str = ""


class Local(Event):
    text: str


class Place(Command[str]):
    order_id: str


class Feed(Query[int]):
    count: int
    fail_at: int = -1


class Boom(Exception):
    pass


def shop_like(log: list[str], *, behaviours: list[Any] | None = None) -> App:
    router = Router("pipeline")

    @router.handler
    async def place(cmd: Place, session: AsyncSession, ctx: Context) -> str:
        await session.execute(insert(notes).values(text=cmd.order_id))
        ctx.emit(Placed(order_id=cmd.order_id))
        return cmd.order_id

    @router.handler
    async def feed(q: Feed, session: AsyncSession, ctx: Context) -> AsyncIterator[int]:
        for i in range(q.count):
            if i == q.fail_at:
                raise Boom(f"item {i}")
            await session.execute(insert(notes).values(text=f"feed-{i}"))
            ctx.emit(Placed(order_id=f"f-{i}"))
            log.append(f"handler yields {i}")
            yield i
        log.append("handler done")

    @router.handler
    async def on_local(event: Local, session: AsyncSession, ctx: Context) -> None:
        ctx.emit(Placed(order_id=f"from-{event.text}"))

    return App(
        name="pipeline",
        routers=[router],
        events=[Placed],
        metadata=state,
        behaviours=behaviours or [],
    )


_OPEN: list[Database] = []


@pytest.fixture(autouse=True)
async def _close_databases() -> AsyncIterator[None]:
    yield
    while _OPEN:
        await _OPEN.pop().close()


def database(tmp_path: Path) -> Database:
    """A database the test owns (closed after it): mediators only use it."""
    db = Database(
        f"sqlite+aiosqlite:///{tmp_path}/pipeline.db", create_schema=True, extra_metadata=[state]
    )
    _OPEN.append(db)
    return db


async def outbox_keys(db: Database) -> list[bytes]:
    async with db.engine.connect() as conn:
        return list(
            (await conn.execute(select(outbox_table.c.key).order_by(outbox_table.c.id))).scalars()
        )


async def note_texts(db: Database) -> list[str]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(select(notes.c.text))).scalars())


# ---------------------------------------------------------------- stages wrap every kind


async def test_a_behaviour_wraps_requests_event_handlers_and_whole_streams(tmp_path: Path) -> None:
    log: list[str] = []

    async def around(message: Any, call_next: CallNext) -> Any:
        log.append(f"enter {type(message).__name__}")
        try:
            return await call_next(message)
        finally:
            log.append(f"leave {type(message).__name__}")

    async with shop_like(log, behaviours=[around]).mediator(
        database=database(tmp_path), owns_database=False
    ) as m:
        await m.send(Place(order_id="o-1"))
        await m.publish(Local(text="x"))  # in-process
        [(_, _, run)] = m.event_handlers(Local)  # as a consumer runs it
        await run(Local(text="y"), InboxClaim("g", "id-1"))
        items = [i async for i in m.stream(Feed(count=2))]

    assert items == [0, 1]
    assert log == [
        "enter Place",
        "leave Place",
        "enter Local",
        "leave Local",
        "enter Local",
        "leave Local",
        "enter Feed",
        "handler yields 0",
        "handler yields 1",
        "handler done",
        "leave Feed",  # the behaviour saw the stream's end, not only its opening
    ]


async def test_a_behaviour_sees_a_streams_error_and_its_cancellation(tmp_path: Path) -> None:
    seen: list[str] = []

    async def watch(message: Any, call_next: CallNext) -> Any:
        try:
            return await call_next(message)
        except Boom as exc:
            seen.append(f"error {exc}")
            raise
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    app = shop_like([], behaviours=[Stage("watch", watch, kinds=frozenset({"stream"}))])
    db = database(tmp_path)
    async with app.mediator(database=db, owns_database=False) as m:
        with pytest.raises(Boom, match="item 1"):
            [i async for i in m.stream(Feed(count=3, fail_at=1))]
        stream = m.stream(Feed(count=100))
        assert await anext(stream) == 0
        await stream.aclose()  # the client went away after one item

        assert seen == ["error item 1", "cancelled"]
        # item 0 of each stream committed when it left; the work towards the next item
        # (which the caller never asked for) rolled back
        assert await note_texts(db) == ["feed-0", "feed-0"]


async def test_a_stream_handler_runs_at_most_one_item_ahead_of_its_caller(
    tmp_path: Path,
) -> None:
    log: list[str] = []
    async with shop_like(log, behaviours=[Stage.of(_passthrough)]).mediator(
        database=database(tmp_path)
    ) as m:
        stream = m.stream(Feed(count=10))
        assert await anext(stream) == 0
        await wait_until(lambda: "handler yields 1" in log, within=5)
        await asyncio.sleep(0)  # give the handler every chance to run further
        await asyncio.sleep(0)
        assert log == ["handler yields 0", "handler yields 1"]
        await stream.aclose()


async def _passthrough(message: Any, call_next: CallNext) -> Any:
    return await call_next(message)


def test_the_pipeline_is_described_outermost_first() -> None:
    async def tracing(message: Any, call_next: CallNext) -> Any:
        return await call_next(message)

    app = shop_like([], behaviours=[Stage("tracing", tracing)])
    assert "  tracing -> handler" in app.describe()
    assert "  correlation -> tracing -> unit of work -> handler" in app.describe(database=True)


# ---------------------------------------------------------------- the unit of work stage


async def test_a_stream_commits_its_work_and_outbox_rows_item_by_item(tmp_path: Path) -> None:
    db = database(tmp_path)
    async with shop_like([]).mediator(database=db, owns_database=False) as m:
        stream = m.stream(Feed(count=3))
        assert await anext(stream) == 0
        # committed when item 0 left: visible to another connection
        assert await outbox_keys(db) == [b"f-0"]
        assert await note_texts(db) == ["feed-0"]
        assert [i async for i in stream] == [1, 2]

    assert await outbox_keys(db) == [b"f-0", b"f-1", b"f-2"]


async def test_every_kind_of_handler_writes_its_travelling_events_to_the_outbox(
    tmp_path: Path,
) -> None:
    db = database(tmp_path)
    async with shop_like([]).mediator(database=db, owns_database=False) as m:
        await m.send(Place(order_id="request"))
        [i async for i in m.stream(Feed(count=1))]
        await m.publish(Local(text="event"))  # in-process event handler
        [(_, _, run)] = m.event_handlers(Local)  # as a consumer runs it, with its inbox claim
        claim = InboxClaim("group", "event-id-1")
        assert await run(Local(text="consumed"), claim) == []
        assert claim.written

    assert await outbox_keys(db) == [b"request", b"f-0", b"from-event", b"from-consumed"]


async def test_without_a_database_travelling_events_go_to_the_publisher(tmp_path: Path) -> None:
    broker = InMemoryBroker()
    router = Router()

    @router.handler
    async def feed(q: Feed, ctx: Context) -> AsyncIterator[int]:
        ctx.emit(Placed(order_id="streamed"))
        yield 1

    @router.handler
    async def on_placed(event: Placed) -> None:
        raise AssertionError("a travelling event is not handed over in-process")

    app = App(routers=[router])
    async with app.mediator(publisher=broker.publisher(app.registry(), source="t")) as m:
        assert [i async for i in m.stream(Feed(count=1))] == [1]

    assert [r.key for r in broker.records(TOPIC)] == [b"streamed"]


async def test_an_unregistered_travelling_event_fails_the_call_and_nothing_commits(
    tmp_path: Path,
) -> None:
    router = Router()

    @router.handler
    async def place(cmd: Place, session: AsyncSession, ctx: Context) -> str:
        await session.execute(insert(notes).values(text=cmd.order_id))
        ctx.emit(Stray(order_id=cmd.order_id))
        return cmd.order_id

    db = database(tmp_path)
    async with App(routers=[router], metadata=state).mediator(
        database=db, owns_database=False
    ) as m:
        with pytest.raises(UnregisteredEvent, match=r"Stray .* App\(events=\[...\]\)"):
            await m.send(Place(order_id="o-1"))

    assert await note_texts(db) == []
    assert await outbox_keys(db) == []


async def test_a_handler_outside_any_unit_of_work_sees_no_current_context() -> None:
    assert current_context() is None


# ---------------------------------------------------------------- the runtime


async def test_a_stream_handlers_travelling_event_reaches_the_broker_under_the_runtime(
    tmp_path: Path,
) -> None:
    """The defect: under Runtime with a database, a stream's event stayed in-process."""
    broker = InMemoryBroker()
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/runtime.db")
    async with Runtime(shop_like([]), settings, broker=broker) as runtime:
        assert runtime.mediator is not None
        assert [i async for i in runtime.mediator.stream(Feed(count=2))] == [0, 1]
        await wait_until(lambda: len(broker.records(TOPIC)) == 2, within=10)

    assert sorted(r.key for r in broker.records(TOPIC)) == [b"f-0", b"f-1"]


# ---------------------------------------------------------------- the private database


class Hold(Command[str]):
    text: str
    fail: bool = False


class Notes(Query[list[str]]):
    pass


async def test_concurrent_calls_on_the_private_database_do_not_share_a_transaction() -> None:
    """A bare mediator's private database: one call's rollback never undoes another's work.

    (It was one shared in-memory connection: a reader's rollback undid a writer's
    uncommitted insert.) SQLite still allows one writer at a time.
    """
    router = Router()
    written = asyncio.Event()
    release = asyncio.Event()

    @router.handler
    async def hold(cmd: Hold, session: AsyncSession) -> str:
        if cmd.fail:  # reads (as a relay's claim does), then fails and rolls back
            await written.wait()  # the other call has written and not yet committed
            await session.execute(select(notes.c.text))
            raise Boom("rolled back")
        await session.execute(insert(notes).values(text=cmd.text))
        written.set()
        await release.wait()
        return cmd.text

    @router.handler
    async def all_notes(query: Notes, session: AsyncSession) -> list[str]:
        return list((await session.execute(select(notes.c.text))).scalars())

    async with App(routers=[router], metadata=state).mediator() as m:
        kept = asyncio.create_task(m.send(Hold(text="kept")))
        with pytest.raises(Boom):
            await m.send(Hold(text="doomed", fail=True))
        release.set()
        assert await kept == "kept"
        assert await m.send(Notes()) == ["kept"]


@pytest.mark.parametrize(
    "module", ["context", "signature", "di", "mediator", "router", "pipeline", "sink", "app"]
)
def test_each_core_module_imports_on_its_own(module: str) -> None:
    """No import cycle between the per-call context, the mediator, DI and the router."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", f"import wirebus.{module}"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------- closing and cascades


@pytest.mark.parametrize("with_stage", [False, True])
async def test_closing_a_stream_closes_the_handlers_generator_before_it_returns(
    with_stage: bool,
) -> None:
    log: list[str] = []
    router = Router()

    @router.handler
    async def feed(q: Feed) -> AsyncIterator[int]:
        try:
            for i in range(q.count):
                yield i
        finally:
            log.append("handler finally")

    behaviours = [Stage.of(_passthrough)] if with_stage else []
    async with App(routers=[router], behaviours=behaviours).mediator() as m:
        stream = m.stream(Feed(count=10))
        assert await anext(stream) == 0
        await stream.aclose()
        log.append("aclose returned")

    assert log == ["handler finally", "aclose returned"]


async def test_a_cascade_that_cannot_be_delivered_fails_its_handler_only() -> None:
    ran: list[str] = []
    router = Router()

    @router.handler
    async def place(cmd: Place, ctx: Context) -> str:
        ctx.emit(Local(text="x"))
        return cmd.order_id

    @router.handler
    async def first(event: Local, ctx: Context) -> None:
        ran.append("first")
        ctx.emit(Stray(order_id="o-1"))  # unregistered and travelling: cannot be delivered

    @router.handler
    async def second(event: Local) -> None:
        ran.append("second")

    broker = InMemoryBroker()
    app = App(routers=[router])
    async with app.mediator(publisher=broker.publisher(app.registry(), source="t")) as m:
        assert await m.send(Place(order_id="o-1")) == "o-1"  # the request itself succeeded
        with pytest.raises(ExceptionGroup) as group:
            await m.publish(Local(text="y"))

    assert ran == ["first", "second", "first", "second"]
    assert [type(e) for e in group.value.exceptions] == [UnregisteredEvent]
