"""``SqlAlchemyInbox``: the inbox as a table, SQLite by default, PostgreSQL in production.

Table ``wirebus_inbox(consumer_group, event_id, handled_at)`` with the pair
as primary key; marking is an insert that ignores a conflict, so two
consumers racing on one redelivered event cannot both fail.

Example::

    inbox = SqlAlchemyInbox("sqlite+aiosqlite:///wirebus.db")
    await inbox.create_schema()
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import DateTime, String, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ..db import inbox_table, metadata

__all__ = ["SqlAlchemyInbox", "inbox_table", "mark_handled", "metadata"]

_COLUMNS = ("consumer_group", "event_id", "handled_at")
# PostgreSQL: one statement of three parameters whatever the number of rows
# (the ids travel as one array), so SQLAlchemy compiles it once; a multi-row
# VALUES list would be compiled again for every batch.
_PG_MARK = (
    pg_insert(inbox_table)
    .from_select(
        _COLUMNS,
        select(
            bindparam("group", type_=String),
            func.unnest(bindparam("ids", type_=ARRAY(String))),
            bindparam("now", type_=DateTime(timezone=True)),
        ),
    )
    .on_conflict_do_nothing()
)
_PG_SEEN = select(inbox_table.c.event_id).where(
    inbox_table.c.consumer_group == bindparam("group", type_=String),
    inbox_table.c.event_id == func.any(bindparam("ids", type_=ARRAY(String))),
)
# SQLite: one executemany of a statement compiled once.
_SQLITE_MARK = sqlite_insert(inbox_table).on_conflict_do_nothing()


class SqlAlchemyInbox:
    """Inbox rows through an SQLAlchemy async engine."""

    def __init__(self, url_or_engine: str | AsyncEngine) -> None:
        if isinstance(url_or_engine, str):
            self.engine = create_async_engine(url_or_engine, pool_pre_ping=True)
            self._owns_engine = True
        else:
            self.engine = url_or_engine
            self._owns_engine = False
        dialect = self.engine.dialect.name
        if dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"the inbox supports sqlite and postgresql, not {dialect}")
        self._postgres = dialect == "postgresql"

    async def create_schema(self) -> None:
        """Create the table if it does not exist (migrations come with ``wirebus db``)."""
        async with self.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)

    async def seen(self, group: str, event_id: str) -> bool:
        query = select(inbox_table.c.event_id).where(
            inbox_table.c.consumer_group == group, inbox_table.c.event_id == event_id
        )
        async with self.engine.connect() as conn:
            return (await conn.execute(query)).first() is not None

    async def mark(self, group: str, event_id: str) -> None:
        await self.mark_many(group, [event_id])

    async def seen_many(self, group: str, event_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        async with self.engine.connect() as conn:
            if self._postgres:  # one constant statement: the ids travel as one array
                params = {"group": group, "ids": list(event_ids)}
                return set((await conn.execute(_PG_SEEN, params)).scalars())
            for chunk in _chunks(event_ids):
                query = select(inbox_table.c.event_id).where(
                    inbox_table.c.consumer_group == group, inbox_table.c.event_id.in_(chunk)
                )
                found.update((await conn.execute(query)).scalars())
        return found

    async def mark_many(self, group: str, event_ids: Sequence[str]) -> None:
        if not event_ids:
            return
        async with self.engine.begin() as conn:
            await mark_handled(conn, self.engine.dialect.name, group, event_ids)

    async def close(self) -> None:
        if self._owns_engine:
            await self.engine.dispose()


async def mark_handled(executor: Any, dialect: str, group: str, event_ids: Sequence[str]) -> None:
    """Insert inbox rows for ``event_ids`` on ``executor`` (a connection or session).

    The one place that writes the inbox table: the inbox store marks through
    it in a transaction of its own, a unit of work in the handler's.
    """
    if not event_ids:
        return
    now = dt.datetime.now(dt.UTC)
    if dialect == "postgresql":
        await executor.execute(_PG_MARK, {"group": group, "ids": list(event_ids), "now": now})
        return
    rows = [{"consumer_group": group, "event_id": e, "handled_at": now} for e in event_ids]
    await executor.execute(_SQLITE_MARK, rows)


def _chunks(items: Sequence[str], size: int = 500) -> Iterator[Sequence[str]]:
    """Slices of ``items`` small enough for one statement's parameters."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
