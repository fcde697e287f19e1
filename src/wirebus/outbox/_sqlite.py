"""The relay's SQLite side: claims and marks through SQLAlchemy (one relay per file)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db import WAITING_ROWS, outbox_table
from .rows import CLAIMED

__all__ = ["SqlMarks", "claim"]

_T = outbox_table
_COLUMNS = [_T.c[name] for name in CLAIMED]


async def claim(
    conn: AsyncConnection, now: dt.datetime, limit: int, *, after: int | None = None
) -> Sequence[Any]:
    """The oldest pending rows that may go now, in id order (columns as in ``CLAIMED``).

    A row waiting out its backoff holds back every other row of its key (none
    of them is claimed, so they cannot fill the batch and starve other keys).
    Rows up to id ``after`` are left out.
    """
    waiting_keys = (
        select(_T.c.key)
        .distinct()
        .where(WAITING_ROWS, _T.c.available_at > now, _T.c.key.is_not(None))
    )
    waiting = (await conn.execute(waiting_keys)).scalars().all()
    conditions = [_T.c.status == "pending", _T.c.available_at <= now]
    if waiting:
        conditions.append(or_(_T.c.key.is_(None), _T.c.key.not_in(waiting)))
    if after is not None:
        conditions.append(_T.c.id > after)
    query = select(*_COLUMNS).where(*conditions).order_by(_T.c.id).limit(limit)
    return (await conn.execute(query)).all()


class SqlMarks:
    """Marks rows published or failed on a SQLAlchemy connection."""

    def __init__(self, conn: AsyncConnection, retention: dt.timedelta | None) -> None:
        self.conn = conn
        self.retention = retention

    async def mark_published(self, ids: list[int], now: dt.datetime) -> None:
        chosen = _T.c.id.in_(ids)
        if self.retention is None:
            await self.conn.execute(delete(_T).where(chosen))
            return
        await self.conn.execute(
            update(_T).where(chosen).values(status="published", published_at=now)
        )
        await self.conn.execute(
            delete(_T).where(_T.c.status == "published", _T.c.published_at < now - self.retention)
        )

    async def mark_attempt(
        self, row_id: int, status: str, attempts: int, message: str, available: dt.datetime
    ) -> None:
        await self.conn.execute(
            update(_T)
            .where(_T.c.id == row_id)
            .values(status=status, attempts=attempts, last_error=message, available_at=available)
        )
