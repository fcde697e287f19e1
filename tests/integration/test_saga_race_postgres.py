"""Two workers driving one saga on PostgreSQL: each step commits once, the loser retries.

Both workers (two mediators, two connection pools, one database) run the
same step at the same time; the step's handler writes a row. The first to
update the saga commits; the second's version check fails, its transaction
rolls back (its row with it) and it tries again from a fresh read. So every
step's row exists exactly once and the saga completes.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from wirebus import App, Command, Mediator, Router
from wirebus.db import Database
from wirebus.saga import Saga, Sagas, SagaState, SagaStatus, Step
from wirebus.saga.sqlalchemy import SqlSagaStore
from wirebus.testing import wait_until

pytestmark = pytest.mark.integration

state = MetaData()
marks = Table(
    "test_saga_marks",
    state,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("step", String(32), nullable=False),
)


@dataclasses.dataclass
class Job:
    job_id: str


class Mark(Command[None]):
    step: str


class Begin(Command[str]):
    job_id: str


def race_app(inside: list[str], go: asyncio.Event) -> App:
    router = Router("race")

    @router.handler
    async def mark(cmd: Mark, session: AsyncSession) -> None:
        await session.execute(insert(marks).values(step=cmd.step))

    async def first(data: Job, mediator: Mediator) -> None:
        await mediator.send(Mark(step="first"))
        inside.append("first")
        await go.wait()  # both workers are inside the step, rows written, before either updates

    async def second(data: Job, mediator: Mediator) -> None:
        await mediator.send(Mark(step="second"))

    job = Saga(
        "job", data=Job, key="job_id",
        steps=[Step("first", action=first), Step("second", action=second)],
    )  # fmt: skip

    @router.handler
    async def begin(cmd: Begin, sagas: Sagas) -> str:
        saga_id = await sagas.start(job, Job(job_id=cmd.job_id))
        assert saga_id is not None
        return saga_id

    return App(name="race", routers=[router], sagas=[job], metadata=state)


async def test_two_workers_racing_on_one_saga_commit_each_step_once(pg_url: str) -> None:
    inside: list[str] = []
    go = asyncio.Event()
    app = race_app(inside, go)
    one = Database(pg_url, schema="migrate", extra_metadata=[state])
    two = Database(pg_url, extra_metadata=[state])
    async with app.mediator(database=one) as first, app.mediator(database=two) as second:
        saga_id = await pending(one, "j-1")
        engines = [app.saga_engine(first), app.saga_engine(second)]
        racing = [asyncio.ensure_future(engine.drive(saga_id)) for engine in engines]
        await wait_until(lambda: inside.count("first") == 2, within=30)
        go.set()
        await asyncio.gather(*racing)  # the loser's conflict was retried, not raised

        saga = await engines[0].get(saga_id)
        assert saga is not None
        assert saga.status is SagaStatus.COMPLETED
        assert [(h.step, h.outcome) for h in saga.history] == [
            ("first", "succeeded"),
            ("second", "succeeded"),
        ]
        async with one.engine.connect() as conn:
            rows = await conn.execute(select(marks.c.step, func.count()).group_by(marks.c.step))
            counts = {step: count for step, count in rows.all()}
    assert counts == {"first": 1, "second": 1}  # the loser's rows rolled back with it


async def pending(database: Database, job_id: str) -> str:
    """A saga started as a crashed process would leave it: stored, driven by nobody."""
    async with database.session() as session, session.begin():
        saga = SagaState.new("job", key=job_id, data={"job_id": job_id})
        assert await SqlSagaStore(session, postgres=True).insert(saga)
    return saga.saga_id
