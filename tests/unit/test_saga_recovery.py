"""Interrupted sagas resume: by ``recover()``, and when a runtime starts on their database.

A crash between the commit that started (or moved) a saga and the drive
that follows it leaves the saga unfinished with nothing running it; a crash
while a step waits for its reply may lose the claimed timeout. Recovery
resumes the first and times out the second once its wait is over.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from wirebus import App, Context, Event, Mediator
from wirebus.db import Database
from wirebus.metrics import Metrics
from wirebus.runtime import Runtime
from wirebus.saga import Saga, SagaState, SagaStatus, Step
from wirebus.saga.poller import SagaPoller
from wirebus.saga.sqlalchemy import SqlSagaStore
from wirebus.settings import Settings
from wirebus.testing import wait_until


@dataclasses.dataclass
class Parcel:
    parcel_id: str
    labelled: bool = False


class Ship(Event):
    parcel_id: str


class Shipped(Event):
    parcel_id: str


async def label(data: Parcel) -> None:
    data.labelled = True


async def unlabel(data: Parcel) -> None:
    data.labelled = False


def parcel_saga(*, timeout: float = 0.05) -> Saga[Parcel]:
    return Saga(
        "parcel",
        data=Parcel,
        key="parcel_id",
        steps=[
            Step("label", action=label, compensate=unlabel),
            Step("ship", send=lambda d: Ship(parcel_id=d.parcel_id), replies={Shipped: "ok"},
                 timeout=timeout),
        ],
    )  # fmt: skip


async def interrupted(app: App, mediator: Mediator, parcel_id: str) -> str:
    """A saga started (committed) whose drive never ran: as after a crash right there."""
    ctx = Context()
    saga = app.sagas[0]
    state = await app.saga_engine(mediator).start(saga, ctx, data=Parcel(parcel_id=parcel_id))
    assert state is not None
    ctx.take_events()  # the drive that a crash prevented
    return state.saga_id


async def test_recover_resumes_a_saga_whose_drive_was_interrupted() -> None:
    app = App(name="parcels", sagas=[parcel_saga(timeout=60)])
    mediator = app.mediator()
    engine = app.saga_engine(mediator)
    saga_id = await interrupted(app, mediator, "p-1")

    assert await engine.recover() == 1

    state = await engine.get(saga_id)
    assert state is not None
    assert state.status is SagaStatus.RUNNING  # labelled, Ship sent, waiting for Shipped
    assert state.data["labelled"] is True
    assert await engine.recover() == 0  # its wait is live: recovery leaves it alone


async def test_recover_times_out_a_saga_whose_wait_is_over() -> None:
    app = App(name="parcels", sagas=[parcel_saga(timeout=0.05)])
    mediator = app.mediator()
    engine = app.saga_engine(mediator)
    saga_id = await interrupted(app, mediator, "p-2")
    await engine.recover()  # runs the label step; then the ship step waits

    async def compensated() -> SagaState | None:
        await engine.recover()  # no poller: only recovery may time it out
        state = await engine.get(saga_id)
        return state if state is not None and state.status is SagaStatus.COMPENSATED else None

    state = await wait_until(compensated, within=5)
    assert state.data["labelled"] is False
    assert [(h.step, h.outcome) for h in state.history][-2:] == [
        ("ship", "timed out"),
        ("label", "succeeded"),
    ]


async def test_a_runtime_starting_on_the_database_resumes_its_unfinished_sagas(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/parcels.db"
    app = App(name="parcels", sagas=[parcel_saga(timeout=60)])
    database = Database(url, schema="migrate")
    await database.start()
    try:
        async with database.session() as session, session.begin():  # as a crashed process left it
            await SqlSagaStore(session, postgres=False).insert(
                SagaState.new("parcel", key="p-3", data={"parcel_id": "p-3", "labelled": False})
            )
    finally:
        await database.close()

    async with Runtime(app, Settings(database_url=url), relay_poll=0.05) as runtime:
        assert runtime.mediator is not None
        engine = app.saga_engine(runtime.mediator)

        async def resumed() -> SagaState | None:
            state = await engine.find("parcel", "p-3")
            return state if state is not None and state.status is SagaStatus.RUNNING else None

        state = await wait_until(resumed, within=10)
        assert state.data["labelled"] is True


async def test_finished_sagas_are_counted_by_saga_and_status() -> None:
    app = App(name="parcels", sagas=[parcel_saga(timeout=0.01)])
    mediator = app.mediator()
    engine = app.saga_engine(mediator)
    engine.metrics = metrics = Metrics()
    saga_id = await interrupted(app, mediator, "p-4")
    await engine.drive(saga_id)

    async def compensated() -> bool:
        await engine.fire_due()
        state = await engine.get(saga_id)
        return state is not None and state.status is SagaStatus.COMPENSATED

    await wait_until(compensated, within=5)
    sample = metrics.registry.get_sample_value
    labels = {"saga": "parcel", "status": "compensated"}
    assert sample("wirebus_sagas_finished_total", labels) == 1.0
    assert sample("wirebus_sagas_failed_total", {"saga": "parcel"}) is None  # none failed


async def test_the_poller_resumes_sagas_left_unchanged_for_a_while_not_only_at_start() -> None:
    app = App(name="parcels", sagas=[parcel_saga(timeout=60)])
    mediator = app.mediator()
    engine = app.saga_engine(mediator)
    async with SagaPoller(engine, interval=0.01, recover_every=0.05) as poller:
        await poller.recovered.wait()  # the start-up pass found nothing
        saga_id = await interrupted(app, mediator, "p-5")  # a crashed process's saga

        async def resumed() -> bool:
            state = await engine.get(saga_id)
            return state is not None and state.status is SagaStatus.RUNNING

        await wait_until(resumed, within=5)
