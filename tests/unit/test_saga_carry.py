"""A drive carries the state each transition wrote to the next: it does not read it again.

On a database every saga transition is one unit of work; the state a
committed transition wrote is what the next one starts from, so a saga that
is started and driven to its end reads its row not once. The version check
still guards every update: a drive handed a state that another worker has
since moved conflicts, rolls back what its step wrote, and goes on from a
fresh read. Proved on a SQLite file, counting the statements the engine
sends.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

from wirebus import App, Command, Event, Mediator, Router
from wirebus.db import Database
from wirebus.saga import Saga, SagaEngine, SagaState, SagaStatus, Step

metadata = sa.MetaData()
done = sa.Table(
    "carry_done",
    metadata,
    sa.Column("key", sa.String, primary_key=True),
    sa.Column("step", sa.Integer, primary_key=True),
)


class Write(Command[None]):
    key: str
    step: int


class Requested(Event):
    key: str


@dataclasses.dataclass
class Work:
    key: str


@dataclasses.dataclass
class Seen:
    """What the steps did (in memory: not rolled back) and the statements sent."""

    actions: list[str] = dataclasses.field(default_factory=list)
    statements: list[str] = dataclasses.field(default_factory=list)


def carry_app(seen: Seen) -> App:
    router = Router("work")

    @router.handler
    async def write(cmd: Write, session: AsyncSession) -> None:
        await session.execute(sa.insert(done).values(key=cmd.key, step=cmd.step))

    def step(index: int) -> Step:
        async def act(data: Work, mediator: Mediator) -> None:
            seen.actions.append(f"{data.key} {index}")
            await mediator.send(Write(key=data.key, step=index))

        return Step(f"step {index}", action=act)

    saga = Saga(
        "work", data=Work, key="key", start_on=[Requested], steps=[step(i) for i in range(3)]
    )
    return App(name="carry", routers=[router], sagas=[saga])


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(
        f"sqlite+aiosqlite:///{tmp_path}/carry.db", schema="create", extra_metadata=[metadata]
    )
    await db.start()
    yield db
    await db.close()


@pytest.fixture
async def running(database: Database) -> AsyncIterator[tuple[Seen, Mediator, SagaEngine]]:
    seen = Seen()

    def on_statement(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.statements.append(" ".join(statement.split()[:3]).upper())

    event.listen(database.engine.sync_engine, "before_cursor_execute", on_statement)
    app = carry_app(seen)
    mediator = app.mediator(database=database, owns_database=False)
    await mediator.start()
    yield seen, mediator, app.saga_engine(mediator)
    await mediator.close()


def saga_statements(seen: Seen) -> list[str]:
    return [s.split()[0] for s in seen.statements if "WIREBUS_SAGA" in s]


async def test_a_saga_started_and_driven_to_its_end_never_reads_its_own_row(
    running: tuple[Seen, Mediator, SagaEngine],
) -> None:
    seen, mediator, engine = running
    await mediator.publish(Requested(key="k-1"))
    statements = saga_statements(seen)
    state = await engine.find("work", "k-1")
    assert state is not None
    assert (state.status, state.version) == (SagaStatus.COMPLETED, 4)
    assert seen.actions == ["k-1 0", "k-1 1", "k-1 2"]
    assert statements == ["INSERT", "UPDATE", "UPDATE", "UPDATE"]  # no SELECT


async def test_a_drive_carrying_a_state_another_worker_moved_rolls_back_and_reads_afresh(
    running: tuple[Seen, Mediator, SagaEngine], database: Database
) -> None:
    seen, mediator, engine = running
    await mediator.publish(Requested(key="k-2"))
    final = await engine.find("work", "k-2")
    assert final is not None
    # what a slower worker still carries: the saga after its first step (version 2)
    stale = dataclasses.replace(
        final,
        status=SagaStatus.RUNNING,
        step=1,
        version=2,
        history=final.history[:1],
        data=dict(final.data),
    )
    seen.actions.clear()

    await engine.drive(final.saga_id, stale)

    assert seen.actions == ["k-2 1"]  # it ran step 1 again from the stale state ...
    after = await engine.get(final.saga_id)
    assert after == final  # ... whose update conflicted: nothing of it was kept
    async with database.engine.connect() as conn:
        rows = (await conn.execute(sa.select(done.c.step).where(done.c.key == "k-2"))).all()
    assert sorted(r.step for r in rows) == [0, 1, 2]  # step 1's second write rolled back
    assert "SELECT" in saga_statements(seen)  # the retry read the saga afresh


async def test_a_drive_without_a_carried_state_reads_it_once_then_carries_it(
    running: tuple[Seen, Mediator, SagaEngine],
) -> None:
    seen, _, engine = running
    state = SagaState.new("work", key="k-3", data={"key": "k-3"})
    async with engine.transaction() as store:  # stored as a crashed process left it
        assert await store.insert(state)
    seen.statements.clear()

    await engine.drive(state.saga_id)

    assert saga_statements(seen) == ["SELECT", "UPDATE", "UPDATE", "UPDATE"]
    found = await engine.get(state.saga_id)
    assert found is not None
    assert found.status is SagaStatus.COMPLETED
