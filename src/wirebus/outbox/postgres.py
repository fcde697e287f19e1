"""``PostgresOutboxStore``: the outbox table of a PostgreSQL database, shared by many relays.

Rows are spread over 64 *shards* by ``crc32(key)``, so all rows of one
aggregate share a shard. Each store *leases* shards with session-level
advisory locks on a dedicated asyncpg connection (:class:`PgLease`): a
shard is relayed by one relay at a time, and a relay that dies loses its
leases with its session. Relays count each other through
``pg_stat_activity`` and keep a fair share, so several relays split the work
and take over a dead one's shards.

A claim is one transaction on the lease connection, with ``FOR UPDATE SKIP
LOCKED``, claimed in chunks while the previous chunk is being published
(``claim_chunks``). Without retention, rows are claimed by deleting them and
the transaction commits once the broker acknowledged all of them, so a crash
or a failure rolls the claim back; a failure then settles the rows in a new
transaction (the leases keep other relays away meanwhile). With retention,
rows are locked, the session is pinged before anything is published (a
relay that lost its leases must not publish), and marked in the claim's
transaction. A relay wakes on ``NOTIFY wirebus_outbox`` (a trigger sends it
on insert).

Example::

    store = PostgresOutboxStore(Database("postgresql+asyncpg://..."))
    async with Relay(store, publisher) as relay:
        await relay.run()
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import time
from collections.abc import Sequence
from typing import Any

from ..db import NOTIFY_CHANNEL, Database, utcnow
from ..errors import LifecycleError
from . import _sql
from ._postgres import PgLease
from .rows import ID
from .store import Attempt, OutboxStats, WakesUp, Wakeup

__all__ = ["PostgresClaimSession", "PostgresOutboxStore"]

_REBALANCE_EVERY = 1.0  # seconds between two looks at how many relays run


class PostgresOutboxStore(WakesUp):
    """The ``wirebus_outbox`` table of a PostgreSQL :class:`~wirebus.db.Database`."""

    shared = True
    claim_chunks = 4

    def __init__(self, database: Database, *, retention: dt.timedelta | None = None) -> None:
        self.database = database
        self.retention = retention
        self._shards: set[int] = set()
        self._lease: PgLease | None = None
        self._listener: Any = None
        self._rebalanced = -math.inf
        self._wakeup = Wakeup()

    @property
    def shards(self) -> frozenset[int]:
        return frozenset(self._shards)

    async def start(self) -> None:
        await self.database.start()
        await self._connect()

    async def _connect(self) -> None:
        import asyncpg

        dsn = self.database.asyncpg_dsn()
        self._lease = await PgLease.connect(dsn, retention=self.retention)
        self._rebalanced = -math.inf
        await self.rebalance()
        self._listener = await asyncpg.connect(dsn)
        await self._listener.add_listener(NOTIFY_CHANNEL, self._wakeup.set)

    async def close(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None
        if self._lease is not None:
            await self._lease.close()  # the session ends, and every shard lease with it
            self._lease = None
        self._shards.clear()

    async def rebalance(self) -> None:
        """Take a fair share of the shards (relays counted at most once a second)."""
        if self._lease is None:
            raise LifecycleError("no lease connection")
        now = time.monotonic()
        if self._shards and now - self._rebalanced < _REBALANCE_EVERY:
            return
        self._rebalanced = now
        await self._lease.rebalance(self._shards)

    async def recover(self) -> None:
        await self.close()
        with contextlib.suppress(Exception):
            await self._connect()

    async def claim_session(self) -> PostgresClaimSession:
        if self._lease is None:
            raise LifecycleError("no lease connection")
        session = PostgresClaimSession(self._lease, set(self._shards), utcnow())
        await session.begin()
        return session

    def now(self) -> dt.datetime:
        return utcnow()

    async def stats(self) -> OutboxStats:
        return await _sql.stats(self.database)

    async def retry_failed(self) -> int:
        return await _sql.retry_failed(self.database)


class PostgresClaimSession:
    """One claim transaction on the lease connection (see the module docstring)."""

    def __init__(self, lease: PgLease, shards: set[int], now: dt.datetime) -> None:
        self._lease = lease
        self._shards = shards
        self._now = now
        self._deleting = lease.retention is None
        self._transaction: Any = lease.transaction()
        self._waiting: list[bytes] | None = None
        self._after: int | None = None
        self._claimed = 0

    async def begin(self) -> None:
        await self._transaction.start()

    async def claim(self, limit: int) -> Sequence[Any]:
        lease = self._lease
        first = self._waiting is None
        if self._waiting is None:
            self._waiting = await lease.waiting_keys(self._shards, self._now)
        rows = await lease.claim(
            self._shards,
            self._now,
            limit,
            waiting=self._waiting,
            # claimed rows are gone (deleting) or locked by this very
            # transaction, which SKIP LOCKED does not skip: leave them out by id
            after=None if self._deleting else self._after,
            delete=self._deleting,
        )
        if rows:
            if first and not self._deleting:
                # Still the session that holds the leases? (A relay that
                # stalled after claiming may have lost them; then it must not
                # publish.)
                await lease.ping()
            self._after = rows[-1][ID]
            self._claimed += len(rows)
        return rows

    async def commit(self, *, published: Sequence[int], attempts: Sequence[Attempt]) -> None:
        try:
            if self._deleting:
                if not attempts and len(published) == self._claimed:
                    await self._transaction.commit()  # the claim deleted them: done
                    return
                await self._transaction.rollback()  # the rows are back, then settled anew
                if not published and not attempts:
                    return
                self._transaction = self._lease.transaction()
                await self._transaction.start()
            await self._settle(published, attempts)
            await self._transaction.commit()
        except BaseException:
            await self.rollback()
            raise

    async def _settle(self, published: Sequence[int], attempts: Sequence[Attempt]) -> None:
        lease = self._lease
        if published:
            await lease.mark_published(list(published), utcnow())
        for a in attempts:
            await lease.mark_attempt(a.row_id, a.status, a.attempts, a.error, a.available_at)

    async def rollback(self) -> None:
        with contextlib.suppress(Exception):
            await self._transaction.rollback()  # no-op once committed or rolled back
