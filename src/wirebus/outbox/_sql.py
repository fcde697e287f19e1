"""What the SQLite and PostgreSQL stores share: stats and requeues through SQLAlchemy."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select, update

from ..db import Database, outbox_table, utcnow
from .store import OutboxStats

__all__ = ["retry_failed", "stats"]

_T = outbox_table


async def stats(database: Database) -> OutboxStats:
    """Pending and failed counts of ``database``'s outbox and the oldest pending row's age."""
    async with database.engine.connect() as conn:
        pending, oldest = (
            await conn.execute(
                select(func.count(), func.min(_T.c.created_at)).where(_T.c.status == "pending")
            )
        ).one()
        failed = (
            await conn.execute(select(func.count()).where(_T.c.status == "failed"))
        ).scalar_one()
    age = None if oldest is None else (utcnow() - _aware(oldest)).total_seconds()
    return OutboxStats(pending=int(pending), failed=int(failed), oldest_pending_seconds=age)


async def retry_failed(database: Database) -> int:
    """Requeue every failed row of ``database``'s outbox; the number requeued."""
    async with database.engine.begin() as conn:
        result = await conn.execute(
            update(_T)
            .where(_T.c.status == "failed")
            .values(status="pending", attempts=0, available_at=utcnow())
        )
    return int(result.rowcount or 0)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
