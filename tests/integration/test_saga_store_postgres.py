"""The saga store conformance suite against ``SqlSagaStore`` on PostgreSQL, concurrency included.

A fresh database per test, its schema from wirebus's revisions. Besides
every store's checks and the rollback ones, PostgreSQL runs the checks of
two transactions at once: two starts of one saga insert one, two updates of
one version write one (the other is a ``SagaConflict``), and two claimers
take disjoint timeouts without waiting for each other (``SKIP LOCKED``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from wirebus.db import Database
from wirebus.testing.saga_harnesses import SqlSagaHarness
from wirebus.testing.saga_suite import (
    CHECKS,
    CONCURRENCY_CHECKS,
    TRANSACTION_CHECKS,
    SagaCheck,
    checks_for,
)

pytestmark = pytest.mark.integration

EVERY_CHECK = CHECKS + TRANSACTION_CHECKS + CONCURRENCY_CHECKS


@pytest.fixture
async def database(pg_url: str) -> AsyncIterator[Database]:
    database = Database(pg_url, schema="migrate", pool_size=4)
    await database.start()
    try:
        yield database
    finally:
        await database.close()


@pytest.mark.parametrize("check", EVERY_CHECK, ids=lambda check: check.__name__)
async def test_the_postgres_store_passes(check: SagaCheck, database: Database) -> None:
    await check(SqlSagaHarness(database))


def test_postgres_runs_every_check_of_the_suite(database: Database) -> None:
    assert checks_for(SqlSagaHarness(database)) == EVERY_CHECK
