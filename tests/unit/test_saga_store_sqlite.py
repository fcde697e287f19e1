"""The saga store conformance suite against ``SqlSagaStore`` on a SQLite file.

The schema comes from wirebus's revisions (``schema="migrate"``), so the
suite also runs on what ``wirebus db upgrade`` builds. Every check runs on
transactions the harness opens and commits, as a unit of work does; SQLite
runs the rollback checks too, not the concurrency ones (its writers take
turns: ``tests/integration/test_saga_store_postgres.py`` has those).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from wirebus.broker import EventEncoder
from wirebus.codec import EventRegistry
from wirebus.db import Database, outbox_table, saga_table
from wirebus.outbox import UnitOfWork
from wirebus.saga.sqlalchemy import SqlSagaStore
from wirebus.saga.state import SagaState
from wirebus.testing.saga_harnesses import SqlSagaHarness
from wirebus.testing.saga_suite import CHECKS, TRANSACTION_CHECKS, SagaCheck, checks_for


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/sagas.db", schema="migrate")
    await database.start()
    try:
        yield database
    finally:
        await database.close()


@pytest.mark.parametrize("check", CHECKS + TRANSACTION_CHECKS, ids=lambda check: check.__name__)
async def test_the_sqlite_store_passes(check: SagaCheck, database: Database) -> None:
    await check(SqlSagaHarness(database))


def test_sqlite_runs_the_rollback_checks_and_not_the_concurrency_ones(database: Database) -> None:
    assert checks_for(SqlSagaHarness(database)) == CHECKS + TRANSACTION_CHECKS


async def count(database: Database, table: object) -> int:
    async with database.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def test_a_saga_started_on_a_unit_of_work_commits_with_its_outbox_rows(
    database: Database,
) -> None:
    uow = UnitOfWork(database, EventEncoder(EventRegistry(), source="sagas"))
    try:
        assert await SqlSagaStore.of(uow).insert(SagaState.new("checkout", key="o-1", data={}))
        assert await count(database, saga_table) == 0  # not before the unit of work commits
        await uow.commit([])
    finally:
        await uow.close()
    assert await count(database, saga_table) == 1


async def test_a_saga_started_on_a_unit_of_work_that_never_commits_is_not_stored(
    database: Database,
) -> None:
    uow = UnitOfWork(database, EventEncoder(EventRegistry(), source="sagas"))
    try:
        assert await SqlSagaStore.of(uow).insert(SagaState.new("checkout", key="o-1", data={}))
    finally:
        await uow.close()
    assert await count(database, saga_table) == 0
    assert await count(database, outbox_table) == 0
