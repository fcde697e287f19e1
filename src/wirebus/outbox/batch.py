"""``BatchUnitOfWork``: one transaction for a consumed partition's batch of records.

A consumer opens one around the records of one partition it fetched. Each
handler call joins it (the pipeline's unit of work sees it on the call's
:class:`~wirebus.inbox.InboxClaim`) instead of opening a transaction of its
own: the handler's ``AsyncSession`` is the batch's, its travelling events
are staged as outbox rows, and the consumer stages the inbox mark of each
record it handled. :meth:`commit` then writes all outbox rows and all inbox
rows with one ``INSERT`` each and commits once (on PostgreSQL each is one
constant statement whose values travel as arrays, so it is compiled once
and the outbox's statement trigger fires once per batch).

If anything fails before the commit, :meth:`close` rolls it all back and the
consumer re-runs those records one transaction each (see
``wirebus.consumer``).

Example::

    batch = BatchUnitOfWork(database, group="payments")
    try:
        ...  # run handlers with InboxClaim(group, ce_id, batch=batch); batch.mark(ce_id)
        await batch.commit()
    finally:
        await batch.close()
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession

from ..db import NOTIFY_CHANNEL, Database, outbox_table
from ..inbox.sqlalchemy import mark_handled
from ._onestatement import OUTBOX_COLUMNS

if TYPE_CHECKING:
    from ..broker import EventEncoder
    from .uow import UnitOfWork

__all__ = ["BatchUnitOfWork"]

_INSERT_OUTBOX = insert(outbox_table)
_PG_TYPES = {
    "event_id": "VARCHAR",
    "topic": "VARCHAR",
    "key": "BYTEA",
    "value": "BYTEA",
    "headers": "TEXT",
    "shard": "INTEGER",
    "status": "VARCHAR",
    "attempts": "INTEGER",
    "created_at": "TIMESTAMPTZ",
    "available_at": "TIMESTAMPTZ",
}
# One row per array position; ORDER BY the position, so the rows take their
# ids in the order they were staged (the relay publishes in id order).
_PG_INSERT_OUTBOX = text(
    f"INSERT INTO {outbox_table.name} ({', '.join(OUTBOX_COLUMNS)})"
    f" SELECT {', '.join(OUTBOX_COLUMNS)} FROM unnest("
    + ", ".join(f"CAST(:{c} AS {_PG_TYPES[c]}[])" for c in OUTBOX_COLUMNS)
    + f") WITH ORDINALITY AS r({', '.join(OUTBOX_COLUMNS)}, ord) ORDER BY ord"
)
_NOTIFY = text(f"NOTIFY {NOTIFY_CHANNEL}")
_ROWS_PER_INSERT = 1000  # SQLite executemany chunks (PostgreSQL: one statement of arrays)


class BatchUnitOfWork:
    """The session, outbox rows and inbox marks of one consumed batch, committed once."""

    def __init__(self, database: Database, group: str) -> None:
        self.database = database
        self.group = group
        self.commits = 0
        """How many times this batch committed (0 or 1): for tests and metrics."""
        self._session: AsyncSession | None = None
        self._unit: UnitOfWork | None = None
        self._outbox: list[dict[str, Any]] = []
        self._handled: list[str] = []

    @property
    def session(self) -> AsyncSession:
        """The batch's session, shared by every handler call in it (opened on first use)."""
        if self._session is None:
            self._session = self.database.session()
        return self._session

    def unit_of_work(self, encoder: EventEncoder) -> UnitOfWork:
        """The :class:`UnitOfWork` of a handler call in this batch (on the batch's session)."""
        if self._unit is None:
            from .uow import UnitOfWork

            self._unit = UnitOfWork(self.database, encoder, session=self.session)
        return self._unit

    def add_outbox_rows(self, rows: Iterable[dict[str, Any]]) -> None:
        """Stage outbox rows (in order) for the commit."""
        self._outbox.extend(rows)

    def mark(self, event_id: str) -> None:
        """Stage the inbox row of a handled event for the commit."""
        self._handled.append(event_id)

    async def commit(self) -> None:
        """Write the staged outbox and inbox rows and commit the batch's transaction."""
        if not self._outbox and not self._handled and self._session is None:
            return
        session = self.session
        rows = self._outbox
        database = self.database
        if rows and database.is_postgres:
            columns = {c: [row[c] for row in rows] for c in OUTBOX_COLUMNS}
            await session.execute(_PG_INSERT_OUTBOX, columns)
        else:
            for start in range(0, len(rows), _ROWS_PER_INSERT):
                await session.execute(_INSERT_OUTBOX, rows[start : start + _ROWS_PER_INSERT])
        if rows and database.is_postgres and not database.outbox_notifies:
            await session.execute(_NOTIFY)  # no trigger (schema not upgraded): notify here
        if self._handled:
            dialect = "postgresql" if database.is_postgres else "sqlite"
            await mark_handled(session, dialect, self.group, self._handled)
        await session.commit()
        self.commits += 1
        self._outbox, self._handled = [], []

    async def close(self) -> None:
        """Close the session; anything not committed is rolled back (idempotent)."""
        self._outbox, self._handled = [], []
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
