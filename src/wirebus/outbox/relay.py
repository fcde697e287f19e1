"""``Relay``: publishes outbox rows in order, marks them only after the broker's ack.

How order and exactly-one-publisher are kept
---------------------------------------------
Rows are spread over 64 *shards* by ``crc32(key)``, so all rows of one
aggregate share a shard. On PostgreSQL each relay *leases* shards with
session-level advisory locks (``pg_try_advisory_lock``) on a dedicated
connection: a shard is relayed by one relay at a time, and a relay that
dies loses its leases with its session. Relays count each other through
``pg_stat_activity`` (``application_name = 'wirebus-relay'``) and keep a fair
share, so several relays split the work and take over a dead one's shards.
Within its shards a relay claims the oldest pending rows with
``FOR UPDATE SKIP LOCKED`` in a transaction that lasts until the broker
acknowledged and the rows are marked, so a crash mid-batch rolls the claim
back and the next relay publishes the same rows again (duplicates only from
that batch; consumers' inboxes drop them).

No ``id > last_seen`` cursor is ever used: each pass asks for *pending* rows
ordered by id, so a row whose transaction commits late (and whose id is
lower than rows already published) is picked up on the next pass.

Within a batch, a row that must wait (backing off after a failure) blocks
the later rows of its key, and only those. A row that fails on its own
(too large, topic refused) is retried with backoff and after ``max_attempts``
marked ``failed`` with its error -- counted, and requeued by
``wirebus outbox retry``. A broker that is unreachable fails every row with
a retriable error: that counts against no row; the relay backs off and
resumes by itself.

SQLite runs one relay (no leases); the rest is the same. On PostgreSQL the
relay wakes on ``NOTIFY wirebus_outbox`` (sent by the unit of work on commit)
and polls every ``poll_interval`` seconds as a fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import fcntl
import logging
import math
import random
import time
from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy import func, select, update

from ..broker import EventPublisher, HeldBack
from ..db import NOTIFY_CHANNEL, Database, outbox_table, utcnow
from ..errors import ConfigurationError, LifecycleError
from ._postgres import PgLease
from ._sqlite import SqlMarks, claim
from .rows import ATTEMPTS, EVENT_ID, ID, SHARDS, records_from_rows

__all__ = ["Relay", "RelayStats"]

log = logging.getLogger(__name__)

_T = outbox_table
_REBALANCE_EVERY = 1.0  # seconds between two looks at how many relays run
_CHUNKS = 4  # a PostgreSQL transaction claims its rows in this many chunks


@dataclasses.dataclass(frozen=True, slots=True)
class RelayStats:
    """Outbox lag: what waits to be published, and for how long."""

    pending: int
    failed: int
    oldest_pending_seconds: float | None


class _Marks(Protocol):
    async def mark_published(self, ids: list[int], now: dt.datetime) -> None: ...

    async def mark_attempt(
        self, row_id: int, status: str, attempts: int, message: str, available: dt.datetime
    ) -> None: ...


class Relay:
    """Claims pending outbox rows and publishes them; ``async with`` or start/run/stop."""

    def __init__(
        self,
        database: Database,
        publisher: EventPublisher,
        *,
        batch_size: int = 2000,
        poll_interval: float = 1.0,
        max_attempts: int = 10,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
        retention: dt.timedelta | None = None,
        metrics: Any = None,
    ) -> None:
        if batch_size < 1 or max_attempts < 1 or poll_interval <= 0:
            raise ConfigurationError("batch_size, max_attempts and poll_interval must be positive")
        self.database = database
        self.publisher = publisher
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.max_attempts = max_attempts
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.retention = retention
        self.metrics = metrics
        """A ``wirebus.metrics.Metrics`` to count published and failed rows in, if any."""
        self.published = 0
        self.failed = 0
        self._shards: set[int] = set(range(SHARDS)) if not database.is_postgres else set()
        self._lease: PgLease | None = None
        self._rebalanced = -math.inf
        self._listener: Any = None
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._outage = 0
        self._lock_file: Any = None
        self._state = "new"

    @property
    def shards(self) -> frozenset[int]:
        """The shards this relay currently relays."""
        return frozenset(self._shards)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect (PostgreSQL: lease connection, first shards and LISTEN)."""
        if self._state != "new":
            raise LifecycleError(f"a {self._state} relay cannot be started again")
        self._state = "started"
        await self.database.start()
        if self.database.is_postgres:
            await self._connect_postgres()
        else:
            self._shards = set(range(SHARDS)) if self._sqlite_lock() else set()

    def _sqlite_lock(self) -> bool:
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

    async def _connect_postgres(self) -> None:
        import asyncpg

        dsn = self.database.asyncpg_dsn()
        self._lease = await PgLease.connect(dsn, retention=self.retention)
        self._rebalanced = -math.inf
        await self._rebalance()
        self._listener = await asyncpg.connect(dsn)
        await self._listener.add_listener(NOTIFY_CHANNEL, lambda *_: self._wake.set())

    async def stop(self) -> None:
        """Finish the batch in hand and disconnect (idempotent)."""
        self._stopping.set()
        self._wake.set()

    async def close(self) -> None:
        """Release leases and connections."""
        self._state = "stopped"
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None
        if self._lease is not None:
            await self._lease.close()  # the session ends, and every shard lease with it
            self._lease = None
        if self._lock_file is not None:
            self._lock_file.close()  # releases the SQLite relay lock
            self._lock_file = None
        self._shards.clear()

    async def __aenter__(self) -> Relay:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
        await self.close()

    # ------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Relay until :meth:`stop`; failures back off and are retried, never raised."""
        if self._state != "started":
            raise LifecycleError("start the relay before running it")
        try:
            while not self._stopping.is_set():
                # From here on a NOTIFY wakes the next idle wait: rows
                # committed while this pass runs are not left to the poll.
                self._wake.clear()
                try:
                    if self.database.is_postgres:
                        await self._rebalance()
                    elif not self._shards and self._sqlite_lock():  # standby takes over
                        self._shards = set(range(SHARDS))
                    relayed = await self.relay_once()
                except Exception as exc:  # database gone, lease lost, ...: back off, go on
                    log.warning("relay pass failed: %s: %s", type(exc).__name__, exc)
                    await self._recover()
                    await self._pause(self._backoff(self._outage + 1))
                    continue
                if self._outage:  # the broker is away: new rows do not cut the backoff short
                    await self._pause(self._backoff(self._outage))
                elif relayed < self.batch_size:
                    await self._idle(self.poll_interval)
        finally:
            await self.close()

    async def _idle(self, seconds: float) -> None:
        """Until new rows are notified (or were, since the pass began), at most ``seconds``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _pause(self, seconds: float) -> None:
        """``seconds``, or until the relay is stopped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.max_backoff, self.initial_backoff * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)

    async def _recover(self) -> None:
        if self.database.is_postgres:
            await self.close()
            self._state = "started"
            with contextlib.suppress(Exception):
                await self._connect_postgres()

    async def _rebalance(self) -> None:
        """Take a fair share of the shards (relays counted at most once a second)."""
        if self._lease is None:
            raise LifecycleError("no lease connection")
        now = time.monotonic()
        if self._shards and now - self._rebalanced < _REBALANCE_EVERY:
            return
        self._rebalanced = now
        await self._lease.rebalance(self._shards)

    # ------------------------------------------------------------ one pass

    async def relay_once(self) -> int:
        """Publish one batch of pending rows; the number of rows handled."""
        if not self._shards:
            return 0
        if self._lease is not None:
            return await self._relay_postgres(self._lease)
        async with self.database.engine.connect() as conn:  # SQLite: one relay
            rows = await claim(conn, utcnow(), self.batch_size)
            await conn.rollback()
            if not rows:
                self._outage = 0
                return 0
            results = await self.publisher.send_records_settled(records_from_rows(rows))
            async with conn.begin():
                return await self._settle(SqlMarks(conn, self.retention), rows, results, utcnow())

    async def _relay_postgres(self, lease: PgLease) -> int:
        """One transaction on the lease session: claim, publish, commit once acknowledged.

        The claim runs on the lease connection itself: if this relay's
        session dies (and its shards pass to another relay), its row locks die
        with its leases, so the new owner never skips them. Without retention
        the rows are claimed by deleting them and the transaction stays open
        until the broker acknowledged every record, so a crash or a failure
        rolls the rows back.

        A transaction takes up to ``batch_size`` rows in a few chunks: the
        next chunk is claimed while the broker takes the one before (the
        database and the broker work at the same time), and sent only once
        that one is acknowledged in full, so no record overtakes an earlier
        one of its key. After a failure no further chunk is sent; the claim
        is rolled back and the rows sent are settled one by one in a new
        transaction (the shard leases keep other relays away meanwhile).
        """
        deleting = self.retention is None
        chunk = max(1, math.ceil(self.batch_size / _CHUNKS))
        sent: list[Any] = []
        results: list[BaseException | None] = []
        transaction = lease.transaction()
        await transaction.start()
        try:
            now = utcnow()
            waiting = await lease.waiting_keys(self._shards, now)
            rows = await lease.claim(self._shards, now, chunk, waiting=waiting, delete=deleting)
            if rows and not deleting:
                # Still the session that holds the leases? (A relay that
                # stalled after claiming may have lost them; then it must not
                # publish.)
                await lease.ping()
            while rows:
                sending = asyncio.ensure_future(
                    self.publisher.send_records_settled(records_from_rows(rows))
                )
                room = self.batch_size - len(sent) - len(rows)
                ahead: Sequence[Any] = ()
                try:
                    if room > 0 and len(rows) == chunk:
                        ahead = await lease.claim(
                            self._shards,
                            now,
                            min(chunk, room),
                            waiting=waiting,
                            # claimed rows are gone (deleting) or locked by
                            # this very transaction, which SKIP LOCKED does
                            # not skip: leave them out by id
                            after=None if deleting else rows[-1][ID],
                            delete=deleting,
                        )
                finally:
                    outcome = await sending  # even if the claim failed: its rows are out
                sent.extend(rows)
                results.extend(outcome)
                if any(result is not None for result in outcome):
                    break  # nothing more is sent; the rows claimed ahead stay pending
                rows = ahead
            if not sent:
                await transaction.commit()
                self._outage = 0
                return 0
            if not deleting:
                handled = await self._settle(lease, sent, results, utcnow())
                await transaction.commit()
                return handled
            if all(result is None for result in results):
                await transaction.commit()
                self._outage = 0
                self._count_published(len(sent))
                return len(sent)
            await transaction.rollback()
        except BaseException:
            with contextlib.suppress(Exception):
                await transaction.rollback()  # no-op once committed or rolled back
            raise
        transaction = lease.transaction()
        await transaction.start()
        try:
            handled = await self._settle(lease, sent, results, utcnow())
            await transaction.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                await transaction.rollback()
            raise
        return handled

    async def _settle(
        self,
        marks: _Marks,
        ready: Sequence[Any],
        results: Sequence[BaseException | None],
        now: dt.datetime,
    ) -> int:
        """Mark what was acknowledged, count failures against their rows; rows handled."""
        ok = [r[ID] for r, error in zip(ready, results, strict=True) if error is None]
        # Held-back rows were not sent (an earlier row of their key failed):
        # they stay pending, untouched, behind that row's backoff.
        failures = [
            (r, e)
            for r, e in zip(ready, results, strict=True)
            if e is not None and not isinstance(e, HeldBack)
        ]
        if failures and not ok and all(_retriable(e) for _, e in failures):
            self._outage += 1
            log.warning(
                "broker unavailable (%s); %d row(s) stay pending", failures[0][1], len(failures)
            )
            return len(ready)
        self._outage = 0
        if ok:
            await marks.mark_published(ok, now)
            self._count_published(len(ok))
        for row, error in failures:
            await self._mark_failed_attempt(marks, row, error, now)
        return len(ready)

    def _count_published(self, count: int) -> None:
        self.published += count
        if self.metrics is not None:
            self.metrics.published.inc(count)

    async def _mark_failed_attempt(
        self, marks: _Marks, row: Any, error: BaseException, now: dt.datetime
    ) -> None:
        message = f"{type(error).__name__}: {error}"[:2000]
        # Only a failure of the record itself spends an attempt; a retriable
        # one (the broker busy or restarting) just waits, however often.
        attempts = row[ATTEMPTS] + (0 if _retriable(error) else 1)
        if attempts >= self.max_attempts:
            status, available = "failed", now
            self.failed += 1
            if self.metrics is not None:
                self.metrics.failed.inc()
            log.error(
                "outbox row %s failed for good after %d attempts: %s",
                row[EVENT_ID],
                attempts,
                message,
            )
        else:
            status = "pending"
            available = now + dt.timedelta(seconds=self._backoff(max(1, attempts)))
        await marks.mark_attempt(row[ID], status, attempts, message, available)

    # ------------------------------------------------------------ operations

    async def stats(self) -> RelayStats:
        """Pending and failed counts and the oldest pending row's age."""
        return await outbox_stats(self.database)


async def outbox_stats(database: Database) -> RelayStats:
    """Outbox lag of ``database`` (for metrics and ``wirebus outbox status``)."""
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
    return RelayStats(pending=int(pending), failed=int(failed), oldest_pending_seconds=age)


async def retry_failed(database: Database) -> int:
    """Requeue every failed row (``wirebus outbox retry``); the number requeued."""
    async with database.engine.begin() as conn:
        result = await conn.execute(
            update(_T)
            .where(_T.c.status == "failed")
            .values(status="pending", attempts=0, available_at=utcnow())
        )
    return int(result.rowcount or 0)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _retriable(error: BaseException) -> bool:
    return bool(getattr(error, "retriable", False)) or isinstance(
        error, (TimeoutError, ConnectionError, OSError)
    )
