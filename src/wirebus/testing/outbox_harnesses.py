"""Harnesses of wirebus' own outbox stores, for the ``OutboxStoreSuite``.

- :class:`InMemoryOutboxHarness`: an ``InMemoryOutboxStore`` whose clock the
  suite moves forward;
- :class:`SqlOutboxHarness`: the SQLite or PostgreSQL store of a database
  URL; rows are written as a unit of work writes them, time passes by moving
  the rows' timestamps back.

Example::

    harness = SqlOutboxHarness("sqlite+aiosqlite:///outbox.db")
    await harness.start()
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..broker import OutgoingRecord
from ..outbox.memory import InMemoryOutboxStore, InMemoryOutboxWrite
from ..outbox.store import OutboxStore, StoredRow

if TYPE_CHECKING:
    from ..db import Database
    from .outbox_suite import LateWrite

__all__ = ["InMemoryOutboxHarness", "SqlOutboxHarness"]


# ---------------------------------------------------------------- in memory


class _Clock:
    def __init__(self) -> None:
        self.offset = dt.timedelta()

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset


class _LateMemoryWrite:
    def __init__(self, write: InMemoryOutboxWrite) -> None:
        self._write = write

    async def commit(self) -> None:
        self._write.commit()


class InMemoryOutboxHarness:
    """The harness of :class:`~wirebus.outbox.memory.InMemoryOutboxStore` (time is a clock)."""

    def __init__(self) -> None:
        self.clock = _Clock()
        self.stores: list[InMemoryOutboxStore] = []
        self._store: InMemoryOutboxStore | None = None

    def _main(self, retention: dt.timedelta | None = None) -> InMemoryOutboxStore:
        if self._store is None:
            self._store = InMemoryOutboxStore(retention=retention, clock=self.clock)
        return self._store

    async def new_store(self, *, retention: dt.timedelta | None = None) -> OutboxStore:
        store = self._main(retention)
        store.retention = retention
        return store

    async def write(self, records: Sequence[OutgoingRecord]) -> None:
        self._main().append(records)

    async def write_late(self, records: Sequence[OutgoingRecord]) -> LateWrite:
        write = self._main().begin()
        write.add(records)
        return _LateMemoryWrite(write)

    async def rows(self) -> list[StoredRow]:
        return self._main().rows()

    async def advance(self, by: dt.timedelta) -> None:
        self.clock.offset += by


# ---------------------------------------------------------------- SQLite and PostgreSQL


class _LateSqlWrite:
    """PostgreSQL: an open transaction; SQLite (one writer at a time): rows hidden until then."""

    def __init__(self, harness: SqlOutboxHarness, rows: list[dict[str, Any]], conn: Any) -> None:
        self._harness = harness
        self._rows = rows
        self._conn = conn

    async def commit(self) -> None:
        from ..db import outbox_table

        if self._conn is not None:
            await self._conn.commit()
            await self._conn.close()
            return
        async with self._harness.db.engine.begin() as conn:
            await conn.execute(outbox_table.insert(), self._rows)


class SqlOutboxHarness:
    """The harness of the SQL stores over the database at ``url`` (``await start()`` first).

    Rows are written as a unit of work writes them; each store gets a
    ``Database`` of its own, as a relay in another process would.
    """

    def __init__(self, url: str) -> None:
        from ..db import Database

        self.url = url
        self.db: Database = Database(url, create_schema=True, pool_size=3)
        self.databases: list[Database] = [self.db]

    async def start(self) -> None:
        await self.db.start()

    async def close(self) -> None:
        for database in self.databases:
            await database.close()

    async def new_store(self, *, retention: dt.timedelta | None = None) -> OutboxStore:
        from ..db import Database
        from ..outbox.relay import outbox_store_for

        database = Database(self.url, create_schema=True, pool_size=3)
        self.databases.append(database)
        return outbox_store_for(database, retention=retention)

    def _rows_of(self, records: Sequence[OutgoingRecord]) -> list[dict[str, Any]]:
        from ..db import utcnow
        from ..outbox.rows import row_from_record

        now = utcnow()
        return [row_from_record(r, now) for r in records]

    async def write(self, records: Sequence[OutgoingRecord]) -> None:
        from ..db import outbox_table

        async with self.db.engine.begin() as conn:
            await conn.execute(outbox_table.insert(), self._rows_of(records))

    async def write_late(self, records: Sequence[OutgoingRecord]) -> LateWrite:
        from ..db import outbox_table

        table = outbox_table
        rows = self._rows_of(records)
        if self.db.is_postgres:
            conn = await self.db.engine.connect()
            for row in rows:
                await conn.execute(table.insert(), row)
            return _LateSqlWrite(self, rows, conn)
        async with self.db.engine.begin() as conn:
            for row in rows:
                result = await conn.execute(table.insert().returning(table.c.id), row)
                row["id"] = result.scalar_one()
            await conn.execute(table.delete().where(table.c.id.in_([r["id"] for r in rows])))
        return _LateSqlWrite(self, rows, None)

    async def rows(self) -> list[StoredRow]:
        from sqlalchemy import select

        from ..db import outbox_table as t

        columns = [t.c[name] for name in StoredRow.__slots__]
        async with self.db.engine.connect() as conn:
            found = (await conn.execute(select(*columns).order_by(t.c.id))).all()
        return [_stored(row._mapping) for row in found]

    async def advance(self, by: dt.timedelta) -> None:
        from sqlalchemy import select, update

        from ..db import outbox_table as t

        times = (t.c.created_at, t.c.available_at, t.c.published_at)
        async with self.db.engine.begin() as conn:
            for row_id, *values in (await conn.execute(select(t.c.id, *times))).all():
                moved = {
                    c.name: None if v is None else v - by
                    for c, v in zip(times, values, strict=True)
                }
                await conn.execute(update(t).where(t.c.id == row_id).values(**moved))


def _stored(row: Any) -> StoredRow:
    values: dict[str, Any] = {
        k: _aware(v) if isinstance(v, dt.datetime) else v for k, v in row.items()
    }
    return StoredRow(**values)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
