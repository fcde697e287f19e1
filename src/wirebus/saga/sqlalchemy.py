"""``SqlSagaStore``: saga state and timeouts in the ``wirebus_saga`` tables, in one transaction.

The store works on one ``AsyncSession`` and never commits: the unit of work
that owns the session does, so a saga's new state commits together with the
outbox rows of the messages its step sends, or neither does. Build it on a
session (``SqlSagaStore(session, postgres=...)``) or on a call's unit of work
(``SqlSagaStore.of(uow)``). The tables are described in
:mod:`wirebus.saga.tables`.

How each rule of :class:`~wirebus.saga.store.SagaStore` is kept:

- **One saga per (type, key).** ``insert`` is ``INSERT ... ON CONFLICT DO
  NOTHING RETURNING saga_id`` on both databases: a start whose (type, key)
  exists returns ``False`` and the transaction goes on unharmed. On
  PostgreSQL a concurrent start of the same saga waits for the first one's
  transaction, then does nothing (or inserts, if the first rolled back).
- **Optimistic concurrency.** ``update`` is ``UPDATE ... WHERE saga_id = :id
  AND version = :expected``; no row updated means another worker moved the
  saga first, and :class:`~wirebus.saga.state.SagaConflict` is raised with
  nothing written. On PostgreSQL the second of two concurrent updates waits
  for the first's row lock, then finds the new version: a conflict, never a
  lost update. The caller retries by reading the saga again.
- **Timeouts claimed once.** On PostgreSQL ``claim_due`` is one statement,
  ``DELETE ... WHERE timeout_id IN (SELECT ... WHERE due_at <= :now ORDER BY
  due_at LIMIT :n FOR UPDATE SKIP LOCKED) RETURNING ...``: concurrent
  claimers (several workers) get disjoint timeouts, none waits for another,
  and the claimed rows come back if the claiming transaction rolls back.
  SQLite has no row locks; the same ``DELETE ... RETURNING`` (without the
  lock clause) is a write, and SQLite lets one transaction write at a time:
  a second claimer waits for the first to commit (the database's busy
  timeout) and then finds the rows gone. That is the single-claimer
  fallback: on SQLite, claims are serialized, not parallel. (As for every
  SQLite write, a transaction that read before a concurrent writer
  committed gets "database is locked" rather than waiting.)

Times go in as timezone-aware datetimes (converted to UTC) and come back
timezone-aware UTC on both databases. Statements are built once, at import.

Example::

    async with database.session() as session, session.begin():
        store = SqlSagaStore(session, postgres=database.is_postgres)
        if await store.insert(SagaState.new("checkout", key="o-1", data={})):
            ...  # the first start of checkout o-1; commits with the session
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import CursorResult, bindparam, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from .state import SagaConflict, SagaState, SagaStatus, SagaTimeout
from .tables import (
    UNFINISHED_SAGAS,
    changed_columns,
    saga_table,
    saga_timeout_table,
    state_of,
    state_row,
    timeout_of,
    timeout_row,
    utc,
)

if TYPE_CHECKING:
    from ..outbox.uow import UnitOfWork

__all__ = ["SqlSagaStore"]

_S = saga_table
_T = saga_timeout_table

# Built once: building statements per call costs more CPU than running them.
_INSERT = {
    True: postgresql.insert(_S).on_conflict_do_nothing().returning(_S.c.saga_id),
    False: sqlite.insert(_S).on_conflict_do_nothing().returning(_S.c.saga_id),
}
_GET = select(_S).where(_S.c.saga_id == bindparam("_id"))
_FIND = select(_S).where(_S.c.saga_type == bindparam("_type"), _S.c.key == bindparam("_key"))
_UPDATE = update(_S).where(_S.c.saga_id == bindparam("_id"), _S.c.version == bindparam("_expected"))
_NEWEST = select(_S).order_by(_S.c.created_at.desc(), _S.c.saga_id.desc())
_LIST = {
    (by_status, by_type): _NEWEST.where(
        *([_S.c.status == bindparam("_status")] if by_status else []),
        *([_S.c.saga_type == bindparam("_type")] if by_type else []),
    ).limit(bindparam("_limit"))
    for by_status in (False, True)
    for by_type in (False, True)
}
_UNFINISHED = (
    select(_S)
    .where(UNFINISHED_SAGAS, _S.c.updated_at < bindparam("_before"))
    .order_by(_S.c.updated_at, _S.c.saga_id)
    .limit(bindparam("_limit"))
)
_ADD_TIMEOUT = insert(_T)
_CANCEL_TIMEOUTS = delete(_T).where(_T.c.saga_id == bindparam("_saga"))


def _claim(*, skip_locked: bool) -> Any:
    due = (
        select(_T.c.timeout_id)
        .where(_T.c.due_at <= bindparam("_now"))
        .order_by(_T.c.due_at, _T.c.timeout_id)
        .limit(bindparam("_limit"))
    )
    if skip_locked:
        due = due.with_for_update(skip_locked=True)
    return delete(_T).where(_T.c.timeout_id.in_(due.scalar_subquery())).returning(*_T.columns)


_CLAIM = {True: _claim(skip_locked=True), False: _claim(skip_locked=False)}


def _due_order(due: SagaTimeout) -> tuple[dt.datetime, str]:
    return (due.due_at, due.timeout_id)


class SqlSagaStore:
    """A :class:`~wirebus.saga.store.SagaStore` on one session's transaction (never commits).

    Example::

        store = SqlSagaStore.of(uow)  # in a handler or step, on the call's unit of work
        state = await store.find("checkout", "o-1")
    """

    def __init__(self, session: AsyncSession, *, postgres: bool) -> None:
        self.session = session
        """The session whose transaction every call works in."""
        self.postgres = postgres
        self._insert = _INSERT[postgres]
        self._claim = _CLAIM[postgres]

    @classmethod
    def of(cls, uow: UnitOfWork) -> SqlSagaStore:
        """A store on ``uow``'s session: its writes commit with the call's outbox rows."""
        return cls(uow.session, postgres=uow.database.is_postgres)

    async def insert(self, state: SagaState) -> bool:
        """Insert ``state`` at version 1; ``False``, writing nothing, if its (type, key) exists."""
        row = state_row(state)
        row["version"] = 1
        result = await self.session.execute(self._insert, row)
        if result.first() is None:
            return False
        state.version = 1
        return True

    async def get(self, saga_id: str) -> SagaState | None:
        """The saga with this id, or ``None``."""
        row = (await self.session.execute(_GET, {"_id": saga_id})).first()
        return None if row is None else state_of(row)

    async def find(self, saga_type: str, key: str) -> SagaState | None:
        """The saga of this type correlated by ``key``, or ``None``."""
        found = await self.session.execute(_FIND, {"_type": saga_type, "_key": key})
        row = found.first()
        return None if row is None else state_of(row)

    async def update(self, state: SagaState, *, expected_version: int) -> None:
        """Write ``state`` at ``expected_version + 1``, else ``SagaConflict``, writing nothing."""
        values = changed_columns(state)
        values["version"] = expected_version + 1
        values["_id"], values["_expected"] = state.saga_id, expected_version
        result = await self.session.execute(_UPDATE, values)
        if not isinstance(result, CursorResult) or result.rowcount != 1:
            raise SagaConflict(
                f"saga {state.saga_id}: not at version {expected_version} (moved on, or gone)"
            )
        state.version = expected_version + 1

    async def list(
        self,
        *,
        status: SagaStatus | None = None,
        saga_type: str | None = None,
        limit: int = 100,
    ) -> Sequence[SagaState]:
        """Sagas, newest (created) first, optionally of one status and type."""
        params: dict[str, Any] = {"_limit": limit}
        if status is not None:
            params["_status"] = status.value
        if saga_type is not None:
            params["_type"] = saga_type
        statement = _LIST[(status is not None, saga_type is not None)]
        return [state_of(row) for row in await self.session.execute(statement, params)]

    async def unfinished(self, *, updated_before: dt.datetime, limit: int) -> Sequence[SagaState]:
        """Sagas not final, last changed before ``updated_before``, least recent first."""
        params = {"_before": utc(updated_before), "_limit": limit}
        return [state_of(row) for row in await self.session.execute(_UNFINISHED, params)]

    async def add_timeout(self, due: SagaTimeout) -> None:
        """Schedule a step's timeout (in this transaction)."""
        await self.session.execute(_ADD_TIMEOUT, timeout_row(due))

    async def cancel_timeouts(self, saga_id: str) -> None:
        """Delete every scheduled timeout of a saga (in this transaction)."""
        await self.session.execute(_CANCEL_TIMEOUTS, {"_saga": saga_id})

    async def claim_due(self, now: dt.datetime, *, limit: int) -> Sequence[SagaTimeout]:
        """Up to ``limit`` due timeouts, earliest first, deleted by this transaction."""
        rows = await self.session.execute(self._claim, {"_now": utc(now), "_limit": limit})
        return sorted((timeout_of(row) for row in rows), key=_due_order)
