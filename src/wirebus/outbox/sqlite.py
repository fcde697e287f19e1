"""``SqliteOutboxStore``: the outbox table of a SQLite database, for one relay per file.

One relay per SQLite file: the store holds an exclusive lock on
``<file>-relay.lock`` while it relays; a second relay on the same file
stands by (no shards) and takes over when the first closes. There is no
notification: a relay polls. Claims and marks run through SQLAlchemy; a
claim is a read (no lock held while publishing), the marks one write
transaction.

Example::

    store = SqliteOutboxStore(Database("sqlite+aiosqlite:///shop.db"))
    async with Relay(store, publisher) as relay:
        await relay.run()
"""

from __future__ import annotations

import datetime as dt
import fcntl
from collections.abc import Sequence
from typing import IO, Any

from sqlalchemy.ext.asyncio import AsyncConnection

from ..db import Database, utcnow
from . import _sql
from ._sqlite import SqlMarks, claim
from .rows import ID, SHARDS
from .store import Attempt, OutboxStats, WakesUp, Wakeup

__all__ = ["SqliteClaimSession", "SqliteOutboxStore"]

_ALL = frozenset(range(SHARDS))


class SqliteOutboxStore(WakesUp):
    """The ``wirebus_outbox`` table of a SQLite :class:`~wirebus.db.Database`."""

    shared = False
    claim_chunks = 1

    def __init__(self, database: Database, *, retention: dt.timedelta | None = None) -> None:
        self.database = database
        self.retention = retention
        self._shards: frozenset[int] = frozenset()
        self._lock_file: IO[str] | None = None
        self._wakeup = Wakeup()

    @property
    def shards(self) -> frozenset[int]:
        return self._shards

    async def start(self) -> None:
        await self.database.start()
        self._shards = _ALL if self._lock() else frozenset()

    def _lock(self) -> bool:
        """One relay per SQLite file: an exclusive lock on ``<file>-relay.lock``."""
        path = self.database.sqlite_path
        if path is None:  # in-memory: private to this process
            return True
        if self._lock_file is None:
            self._lock_file = open(f"{path}-relay.lock", "a")  # noqa: SIM115 (held for life)
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    async def close(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # releases the relay lock
            self._lock_file = None
        self._shards = frozenset()

    async def rebalance(self) -> None:
        if not self._shards and self._lock():  # a standby takes over
            self._shards = _ALL

    async def recover(self) -> None:
        return None

    async def claim_session(self) -> SqliteClaimSession:
        conn = await self.database.engine.connect()
        return SqliteClaimSession(conn, utcnow(), self.retention)

    def now(self) -> dt.datetime:
        return utcnow()

    async def stats(self) -> OutboxStats:
        return await _sql.stats(self.database)

    async def retry_failed(self) -> int:
        return await _sql.retry_failed(self.database)


class SqliteClaimSession:
    """A claim on SQLite: reads the rows, holds no lock while they are published."""

    def __init__(
        self, conn: AsyncConnection, now: dt.datetime, retention: dt.timedelta | None
    ) -> None:
        self._conn = conn
        self._now = now
        self._retention = retention
        self._after: int | None = None

    async def claim(self, limit: int) -> Sequence[Any]:
        rows = await claim(self._conn, self._now, limit, after=self._after)
        await self._conn.rollback()  # end the read: writers are not kept waiting
        if rows:
            self._after = rows[-1][ID]
        return rows

    async def commit(self, *, published: Sequence[int], attempts: Sequence[Attempt]) -> None:
        try:
            if published or attempts:
                async with self._conn.begin():
                    marks = SqlMarks(self._conn, self._retention)
                    if published:
                        await marks.mark_published(list(published), utcnow())
                    for a in attempts:
                        await marks.mark_attempt(
                            a.row_id, a.status, a.attempts, a.error, a.available_at
                        )
        finally:
            await self._conn.close()

    async def rollback(self) -> None:
        await self._conn.close()
