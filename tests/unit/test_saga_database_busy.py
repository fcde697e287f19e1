"""A busy database is no failure of a saga's step: the saga waits, then goes on.

Under load SQLite answers "database is locked" once its busy timeout passes
(issue: orders acknowledged before a SIGTERM ended CANCELLED after the
restart, "confirm order: OperationalError: database is locked"). Taken for a
failure of the step, that compensated sagas that did nothing wrong; the
transition rolls back instead, and the poller drives the saga again later.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3

from wirebus import App, Context
from wirebus.saga import Saga, SagaStatus, Step
from wirebus.saga.poller import SagaPoller
from wirebus.testing import wait_until


@dataclasses.dataclass
class Booking:
    booking_id: str
    cancelled: bool = False


class FlakyDatabase:
    """Answers "database is locked" the first ``busy`` times, then works."""

    def __init__(self, busy: int) -> None:
        self.busy = busy
        self.calls = 0

    async def confirm(self, data: Booking) -> None:
        self.calls += 1
        if self.calls <= self.busy:
            raise sqlite3.OperationalError("database is locked")

    async def cancel(self, data: Booking) -> None:
        data.cancelled = True


async def hold(data: Booking) -> None:
    pass


def booking_saga(database: FlakyDatabase) -> Saga[Booking]:
    return Saga(
        "booking",
        data=Booking,
        key="booking_id",
        steps=[
            Step("hold", action=hold, compensate=database.cancel),
            Step("confirm", action=database.confirm),
        ],
    )


async def test_a_step_meeting_a_locked_database_is_tried_again_not_compensated() -> None:
    database = FlakyDatabase(busy=1)
    app = App(name="bookings", sagas=[booking_saga(database)])
    mediator = app.mediator()
    engine = app.saga_engine(mediator)
    ctx = Context()
    started = await engine.start(app.sagas[0], ctx, data=Booking(booking_id="b-1"))
    assert started is not None
    ctx.take_events()  # driven here, by hand
    async with SagaPoller(engine, interval=0.05, recover=False):
        await engine.drive(started.saga_id)  # the confirm meets a locked database

        async def finished() -> bool:
            state = await engine.find("booking", "b-1")
            return state is not None and state.status.final

        await wait_until(finished, within=20)
    state = await engine.find("booking", "b-1")
    assert state is not None
    assert state.status is SagaStatus.COMPLETED, state.error
    assert database.calls == 2  # locked once, then confirmed


# ------------------------------------------------- stopping the poller


class Gate:
    """An in-process step that waits for ``release``, as a statement waits for SQLite's lock."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.finished = False

    async def pass_through(self, data: Booking) -> None:
        self.entered.set()
        await self.release.wait()
        self.finished = True


async def test_a_stopping_poller_lets_the_transition_in_progress_commit_not_cancelled() -> None:
    """A cancelled SQLite statement makes SQLAlchemy terminate its aiosqlite connection, a
    close that could wait forever: ``wirebus serve`` hung after a SIGTERM (CI, TimeoutExpired)."""
    gate = Gate()
    saga = Saga(
        "gated", data=Booking, key="booking_id", steps=[Step("pass", action=gate.pass_through)]
    )
    app = App(name="gated", sagas=[saga])
    mediator = app.mediator()
    engine = app.saga_engine(mediator)
    ctx = Context()
    started = await engine.start(saga, ctx, data=Booking(booking_id="b-2"))
    assert started is not None
    ctx.take_events()  # left to the poller's recovery
    poller = SagaPoller(engine, interval=0.05)
    await poller.start()
    await asyncio.wait_for(gate.entered.wait(), 20)  # recovery is driving it

    stopping = asyncio.ensure_future(poller.stop())
    await asyncio.sleep(0)  # let the stop begin while the step runs
    gate.release.set()
    await asyncio.wait_for(stopping, 20)

    assert gate.finished
    state = await engine.get(started.saga_id)
    assert state is not None
    assert state.status is SagaStatus.COMPLETED
