"""The relay's PostgreSQL session: shard leases, claims and marks on one connection.

Everything a relay does on PostgreSQL happens on this one ``asyncpg``
connection, so the shard leases (session advisory locks) and the row locks of
a claim live and die together: a relay whose session ends loses both at once,
and the relay that takes its shards over finds the rows pending again.

The statements are written for PostgreSQL and run on asyncpg directly, not
through SQLAlchemy: they are few and fixed (asyncpg prepares each text once
per connection), and a claim returns thousands of rows, whose conversion
through SQLAlchemy's result layer cost the relay about as much CPU as
publishing them. The claim returns only the columns the relay uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import random
from collections.abc import Sequence
from typing import Any

from ..db import WAITING_ROWS
from .rows import CLAIMED, ID, SHARDS

__all__ = ["APPLICATION", "PgLease", "claim_statement"]

APPLICATION = "wirebus-relay"
"""``application_name`` of relay sessions: relays count each other by it."""

SESSION_SETTINGS = {"application_name": APPLICATION, "enable_sort": "off"}
"""The lease session's settings. ``enable_sort = off``: a claim must walk the
pending rows in id order and stop after its limit. Without statistics (a
fresh table, or a queue table that churned since autovacuum last analyzed it)
the planner otherwise chose to fetch every pending row and sort them all --
a claim that costs as much as the backlog is long (37 ms for 2,000 of 50,000
rows, against 4 ms walking the index). The relay's queries need no sort."""

LOCK_SPACE = 0x77697265  # "wire": the advisory-lock key space of the shards
TABLE = "wirebus_outbox"
COLUMNS = ", ".join(CLAIMED)

_LIVE = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE application_name = $1 AND datname = current_database()"
)
_UNLOCK = "SELECT pg_advisory_unlock($1, $2)"
_TRY_LOCK = "SELECT pg_try_advisory_lock($1, $2)"
_PUBLISHED_DELETE = f"DELETE FROM {TABLE} WHERE id = ANY($1::bigint[])"
_PUBLISHED_KEEP = (
    f"UPDATE {TABLE} SET status = 'published', published_at = $2 WHERE id = ANY($1::bigint[])"
)
_PURGE = f"DELETE FROM {TABLE} WHERE status = 'published' AND published_at < $1"
_ATTEMPT = (
    f"UPDATE {TABLE} SET status = $2, attempts = $3, last_error = $4, available_at = $5"
    " WHERE id = $1"
)


class PgLease:
    """One relay's PostgreSQL session (``await PgLease.connect(dsn)``)."""

    def __init__(self, connection: Any, *, retention: dt.timedelta | None = None) -> None:
        self.connection = connection
        """The ``asyncpg.Connection``; one statement at a time."""
        self.retention = retention

    @classmethod
    async def connect(cls, dsn: str, *, retention: dt.timedelta | None = None) -> PgLease:
        import asyncpg

        connection = await asyncpg.connect(dsn, server_settings=SESSION_SETTINGS)
        return cls(connection, retention=retention)

    async def close(self) -> None:
        """End the session: every lease and row lock it held is released."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.connection.close(), 5)
            return
        self.connection.terminate()

    def transaction(self) -> Any:
        """A new ``asyncpg`` transaction (``await tx.start()``, ``commit``, ``rollback``)."""
        return self.connection.transaction()

    # ------------------------------------------------------------ leases

    async def rebalance(self, shards: set[int]) -> None:
        """Keep a fair share of the shards: release extras, lease free ones (in place)."""
        conn = self.connection
        live = int(await conn.fetchval(_LIVE, APPLICATION))
        fair = math.ceil(SHARDS / max(1, live))
        for shard in sorted(shards)[fair:]:
            await conn.fetchval(_UNLOCK, LOCK_SPACE, shard)
            shards.discard(shard)
        if len(shards) >= fair:
            return
        start = random.randrange(SHARDS)
        for i in range(SHARDS):
            shard = (start + i) % SHARDS
            if shard not in shards and await conn.fetchval(_TRY_LOCK, LOCK_SPACE, shard):
                shards.add(shard)
                if len(shards) >= fair:
                    return

    # ------------------------------------------------------------ claims

    async def waiting_keys(self, shards: set[int], now: dt.datetime) -> list[bytes]:
        """Keys with a row waiting out its backoff (found through the partial index).

        A row waiting out its backoff holds back every other row of its key;
        these keys are left out of a claim, so that the claim itself stays a
        walk of the pending ids that stops after its limit, however large the
        backlog.
        """
        args, mine = _shard_filter(shards, [now])
        rows = await self.connection.fetch(
            f"SELECT DISTINCT key FROM {TABLE} WHERE {WAITING_ROWS.text} AND available_at > $1"
            f" AND key IS NOT NULL{mine}",
            *args,
        )
        return [row[0] for row in rows]

    async def claim(
        self,
        shards: set[int],
        now: dt.datetime,
        limit: int,
        *,
        waiting: Sequence[bytes] = (),
        after: int | None = None,
        delete: bool,
    ) -> Sequence[Any]:
        """The oldest pending rows of ``shards`` that may go now, locked (and deleted).

        Call inside a transaction; rows of the ``waiting`` keys, and rows up to
        id ``after``, are left out.
        With ``delete`` the rows are claimed by deleting them (``DELETE ...
        RETURNING``: one write per row); the transaction then decides whether
        they are gone. Rows come back in id order, their columns as in
        ``rows.CLAIMED``.
        """
        sql, args = claim_statement(shards, now, limit, waiting=waiting, after=after, delete=delete)
        rows = await self.connection.fetch(sql, *args)
        if not delete:
            return list(rows)
        return sorted(rows, key=_by_id)  # RETURNING keeps no order

    async def ping(self) -> None:
        """Fails if the session (and with it the leases) is gone."""
        await self.connection.fetchval("SELECT 1")

    # ------------------------------------------------------------ marks

    async def mark_published(self, ids: list[int], now: dt.datetime) -> None:
        conn = self.connection
        if self.retention is None:
            await conn.execute(_PUBLISHED_DELETE, ids)
            return
        await conn.execute(_PUBLISHED_KEEP, ids, now)
        await conn.execute(_PURGE, now - self.retention)

    async def mark_attempt(
        self, row_id: int, status: str, attempts: int, message: str, available: dt.datetime
    ) -> None:
        await self.connection.execute(_ATTEMPT, row_id, status, attempts, message, available)


def claim_statement(
    shards: set[int],
    now: dt.datetime,
    limit: int,
    *,
    waiting: Sequence[bytes] = (),
    after: int | None = None,
    delete: bool,
) -> tuple[str, list[Any]]:
    """The SQL and arguments of :meth:`PgLease.claim`."""
    args, mine = _shard_filter(shards, [now])
    if waiting:
        args.append(list(waiting))
        mine += f" AND (key IS NULL OR key <> ALL(${len(args)}::bytea[]))"
    if after is not None:
        args.append(after)
        mine += f" AND id > ${len(args)}"
    args.append(limit)
    pick = (
        f"FROM {TABLE} WHERE status = 'pending' AND available_at <= $1{mine}"
        f" ORDER BY id LIMIT ${len(args)} FOR UPDATE SKIP LOCKED"
    )
    if not delete:
        return f"SELECT {COLUMNS} {pick}", args
    # "= ANY(ARRAY(...))", not "IN (...)": the delete then finds the rows by
    # primary key, where the planner may otherwise join against the whole table.
    return f"DELETE FROM {TABLE} WHERE id = ANY(ARRAY(SELECT id {pick})) RETURNING {COLUMNS}", args


def _shard_filter(shards: set[int], args: list[Any]) -> tuple[list[Any], str]:
    """The condition on ``shard`` (none when holding every shard) and its argument."""
    if len(shards) >= SHARDS:
        return args, ""
    args.append(sorted(shards))
    return args, f" AND shard = ANY(${len(args)}::int[])"


def _by_id(row: Any) -> int:
    return int(row[ID])
