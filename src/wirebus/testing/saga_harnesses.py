"""What the saga store suite runs on: the harness port, wirebus's harnesses, the checks' helpers.

:class:`SagaStoreHarness` is what a store's tests provide; wirebus's own
stores have :class:`MemorySagaHarness` and :class:`SqlSagaHarness` (SQLite,
PostgreSQL).

A harness opens transactions on one store; the SQL harness gives each
transaction its own session and commits it on a clean exit, as a unit of
work does.

Example::

    database = Database(url, schema="migrate")
    await database.start()
    harness = SqlSagaHarness(database)
    for check in checks_for(harness):
        await check(harness)
    await database.close()
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from sqlalchemy import text

from ..db import Database
from ..saga.memory import MemorySagaStore
from ..saga.sqlalchemy import SqlSagaStore
from ..saga.state import SagaState, SagaTimeout
from ..saga.store import SagaStore

__all__ = [
    "T0",
    "MemorySagaHarness",
    "Rollback",
    "SagaCheck",
    "SagaStoreHarness",
    "SqlSagaHarness",
    "expect",
    "new_saga",
    "new_timeout",
    "stored_state",
    "stored",
]

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
"""The suite's clock starts here (fixed: every check is reproducible)."""


class SagaStoreHarness(Protocol):
    """What the suite needs of a store: transactions on one empty store."""

    transactional: bool
    """A transaction that raises leaves nothing it wrote (and its claims come back)."""
    concurrent: bool
    """Two transactions may be open at once, a writer waiting for the other's row locks."""

    def transaction(self) -> AbstractAsyncContextManager[SagaStore]:
        """The store in a new transaction: committed on a clean exit, rolled back on a raise."""

    async def waiting_for_locks(self) -> int:
        """How many transactions wait for a lock another holds (``concurrent`` stores)."""


SagaCheck = Callable[[SagaStoreHarness], Awaitable[None]]


def expect(condition: object, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def new_saga(key: str = "o-1", *, saga_type: str = "checkout", minutes: int = 0) -> SagaState:
    return SagaState.new(
        saga_type, key=key, data={"order": key}, now=T0 + dt.timedelta(minutes=minutes)
    )


def new_timeout(saga_id: str, minutes: int, *, step: int = 1) -> SagaTimeout:
    due = T0 + dt.timedelta(minutes=minutes)
    return SagaTimeout(str(uuid.uuid4()), saga_id, step=step, version=1, due_at=due)


async def stored(harness: SagaStoreHarness, *states: SagaState) -> None:
    async with harness.transaction() as store:
        for state in states:
            expect(await store.insert(state), f"a new saga {state.key} was not inserted")


async def stored_state(harness: SagaStoreHarness, saga_id: str) -> SagaState | None:
    async with harness.transaction() as store:
        return await store.get(saga_id)


class Rollback(Exception):
    """Raised in a transaction to roll it back."""


class MemorySagaHarness:
    """One :class:`MemorySagaStore`; its "transactions" are the store itself (no rollback)."""

    transactional = False
    concurrent = False

    def __init__(self, store: MemorySagaStore | None = None) -> None:
        self.store = store if store is not None else MemorySagaStore()

    def transaction(self) -> contextlib.AbstractAsyncContextManager[SagaStore]:
        return contextlib.nullcontext(self.store)

    async def waiting_for_locks(self) -> int:
        return 0


_WAITING = text(
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


class SqlSagaHarness:
    """:class:`SqlSagaStore` on a started :class:`Database` with the saga tables.

    Each transaction is a new session, committed when the ``async with``
    ends cleanly and rolled back when it raises. PostgreSQL runs the
    concurrency checks too (two transactions at once); SQLite does not, its
    writers take turns.
    """

    transactional = True

    def __init__(self, database: Database) -> None:
        self.database = database
        self.concurrent = database.is_postgres

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[SagaStore]:
        async with self.database.session() as session, session.begin():
            yield SqlSagaStore(session, postgres=self.database.is_postgres)

    async def waiting_for_locks(self) -> int:
        """PostgreSQL: how many sessions on this database wait for a lock another one holds."""
        async with self.database.engine.connect() as conn:
            return int((await conn.execute(_WAITING)).scalar_one())
