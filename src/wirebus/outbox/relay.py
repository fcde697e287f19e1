"""``Relay``: publishes outbox rows in order, settles them only after the broker's ack.

One loop over an :class:`~wirebus.outbox.store.OutboxStore`: claim a batch,
send it, settle it, back off. The store keeps order and exactly-one-relay
(leases on PostgreSQL, a file lock on SQLite); the relay decides what each
outcome means.

No ``id > last_seen`` cursor is ever used: each pass claims *pending* rows in
id order, so a row whose transaction commits late (and whose id is lower
than rows already published) is picked up on the next pass.

A batch is claimed in ``store.claim_chunks`` chunks: the next chunk is
claimed while the broker takes the one before, and sent only once that one
is acknowledged in full, so no record overtakes an earlier one of its key.
After a failure no further chunk is sent; the rows claimed ahead stay pending.

Within a batch, a row that must wait (backing off after a failure) blocks
the later rows of its key, and only those. A row that fails on its own
(too large, topic refused) is retried with backoff and after ``max_attempts``
marked ``failed`` with its error -- counted, and requeued by
``wirebus outbox retry``. A broker that is unreachable fails every row with
a retriable error: that counts against no row; the relay backs off and
resumes by itself.

Example::

    store = outbox_store_for(database)          # or InMemoryOutboxStore()
    async with Relay(store, publisher) as relay:
        await relay.run()
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from ..broker import EventPublisher, HeldBack
from ..errors import ConfigurationError, LifecycleError
from ..retry import Backoff, is_retriable
from .rows import ATTEMPTS, EVENT_ID, ID, HeaderReader
from .store import Attempt, ClaimSession, OutboxStats, OutboxStore

if TYPE_CHECKING:
    from ..db import Database

__all__ = ["Relay", "RelayStats", "outbox_stats", "outbox_store_for", "retry_failed"]

log = logging.getLogger(__name__)

RelayStats = OutboxStats
"""The former name of :class:`~wirebus.outbox.store.OutboxStats`."""


def outbox_store_for(database: Database, *, retention: dt.timedelta | None = None) -> OutboxStore:
    """The store of ``database``'s outbox table: PostgreSQL or SQLite.

    Example::

        store = outbox_store_for(Database(url), retention=dt.timedelta(days=1))
    """
    if database.is_postgres:
        from .postgres import PostgresOutboxStore

        return PostgresOutboxStore(database, retention=retention)
    from .sqlite import SqliteOutboxStore

    return SqliteOutboxStore(database, retention=retention)


async def outbox_stats(database: Database) -> OutboxStats:
    """Outbox lag of ``database`` (for metrics and ``wirebus outbox status``)."""
    return await outbox_store_for(database).stats()


async def retry_failed(database: Database) -> int:
    """Requeue every failed row of ``database`` (``wirebus outbox retry``); the number."""
    return await outbox_store_for(database).retry_failed()


class Relay:
    """Claims pending outbox rows and publishes them; ``async with`` or start/run/stop.

    ``store`` is an :class:`OutboxStore`; a :class:`~wirebus.db.Database` is
    still accepted (its store is built with ``outbox_store_for(database,
    retention=retention)``).

    Example::

        async with Relay(InMemoryOutboxStore(), broker.publisher(registry, source="x")) as relay:
            await relay.relay_once()
    """

    def __init__(
        self,
        store: OutboxStore | Database,
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
        self.store: OutboxStore = _store(store, retention)
        self.publisher = publisher
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.max_attempts = max_attempts
        self.backoff = Backoff(initial_delay=initial_backoff, max_delay=max_backoff, jitter="equal")
        """Waits after failures: of a row (by its attempts) and of a pass (by the outage)."""
        self.metrics = metrics
        """A ``wirebus.metrics.Metrics`` to count published and failed rows in, if any."""
        self.published = 0
        self.failed = 0
        self.passes = 0
        """Passes made so far (claims tried), for operators and tests to watch progress."""
        self._headers = HeaderReader()
        self._chunk = max(1, math.ceil(batch_size / max(1, self.store.claim_chunks)))
        self._stopping = asyncio.Event()
        self._outage = 0
        self._state = "new"

    @property
    def shards(self) -> frozenset[int]:
        """The shards this relay currently relays."""
        return self.store.shards

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the store (PostgreSQL: lease connection, first shards and LISTEN)."""
        if self._state != "new":
            raise LifecycleError(f"a {self._state} relay cannot be started again")
        self._state = "started"
        await self.store.start()

    async def stop(self) -> None:
        """Finish the batch in hand and disconnect (idempotent)."""
        self._stopping.set()
        self.store.wake()

    def wake(self) -> None:
        """Start the next pass now, not at the end of ``poll_interval``: rows were committed.

        Call it after committing outbox rows the store does not announce
        (SQLite has no notifications); a wake during a pass starts another
        pass right after it, so no committed row waits for the poll.

        Example::

            await session.commit()      # outbox rows in it
            relay.wake()
        """
        self.store.wake()

    async def close(self) -> None:
        """Release leases, locks and connections."""
        self._state = "stopped"
        await self.store.close()

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
        store = self.store
        try:
            while not self._stopping.is_set():
                # From here on new rows wake the next idle wait: rows
                # committed while this pass runs are not left to the poll.
                store.arm_wakeup()
                try:
                    await store.rebalance()
                    relayed = await self.relay_once()
                except Exception as exc:  # database gone, lease lost, ...: back off, go on
                    log.warning("relay pass failed: %s: %s", type(exc).__name__, exc)
                    await store.recover()
                    await self._pause(self.backoff.delay(self._outage + 1))
                    continue
                if self._outage:  # the broker is away: new rows do not cut the backoff short
                    await self._pause(self.backoff.delay(self._outage))
                elif relayed < self.batch_size and not self._stopping.is_set():
                    await store.wait_for_rows(self.poll_interval)
        finally:
            await self.close()

    async def _pause(self, seconds: float) -> None:
        """``seconds``, or until the relay is stopped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # ------------------------------------------------------------ one pass

    async def relay_once(self) -> int:
        """Publish one batch of pending rows; the number of rows handled."""
        self.passes += 1
        store = self.store
        if not store.shards:
            return 0
        session = await store.claim_session()
        try:
            sent, results = await self._send(session)
            if not sent:
                await session.commit(published=(), attempts=())
                self._outage = 0
                return 0
            published, attempts = self._outcome(sent, results, store.now())
            await session.commit(published=published, attempts=attempts)
        except BaseException:
            await session.rollback()
            raise
        self._count(published, attempts)
        return len(sent)

    async def _send(self, session: ClaimSession) -> tuple[list[Any], list[BaseException | None]]:
        """Claim and send chunk after chunk, the next claimed while the last is sent."""
        chunk = self._chunk
        sent: list[Any] = []
        results: list[BaseException | None] = []
        rows = await session.claim(chunk)
        while rows:
            sending = asyncio.ensure_future(
                self.publisher.send_records_settled(self._headers.records(rows))
            )
            room = self.batch_size - len(sent) - len(rows)
            ahead: Sequence[Any] = ()
            try:
                if room > 0 and len(rows) == chunk:
                    ahead = await session.claim(min(chunk, room))
            finally:
                outcome = await sending  # even if the claim failed: its rows are out
            sent.extend(rows)
            results.extend(outcome)
            if any(result is not None for result in outcome):
                break  # nothing more is sent; the rows claimed ahead stay pending
            rows = ahead
        return sent, results

    def _outcome(
        self, sent: Sequence[Any], results: Sequence[BaseException | None], now: dt.datetime
    ) -> tuple[list[int], list[Attempt]]:
        """What to record: the acknowledged rows, and an attempt per failed row."""
        published = [r[ID] for r, error in zip(sent, results, strict=True) if error is None]
        # Held-back rows were not sent (an earlier row of their key failed):
        # they stay pending, untouched, behind that row's backoff.
        failures = [
            (r, e)
            for r, e in zip(sent, results, strict=True)
            if e is not None and not isinstance(e, HeldBack)
        ]
        if failures and not published and all(is_retriable(e) for _, e in failures):
            self._outage += 1
            log.warning(
                "broker unavailable (%s); %d row(s) stay pending", failures[0][1], len(failures)
            )
            return [], []
        self._outage = 0
        return published, [self._attempt(row, error, now) for row, error in failures]

    def _attempt(self, row: Any, error: BaseException, now: dt.datetime) -> Attempt:
        message = f"{type(error).__name__}: {error}"[:2000]
        # Only a failure of the record itself spends an attempt; a retriable
        # one (the broker busy or restarting) just waits, however often.
        attempts = row[ATTEMPTS] + (0 if is_retriable(error) else 1)
        if attempts >= self.max_attempts:
            log.error(
                "outbox row %s failed for good after %d attempts: %s",
                row[EVENT_ID],
                attempts,
                message,
            )
            return Attempt(row[ID], "failed", attempts, message, now)
        delay = dt.timedelta(seconds=self.backoff.delay(max(1, attempts)))
        return Attempt(row[ID], "pending", attempts, message, now + delay)

    def _count(self, published: Sequence[int], attempts: Sequence[Attempt]) -> None:
        failed = sum(1 for a in attempts if a.status == "failed")
        self.published += len(published)
        self.failed += failed
        if self.metrics is not None:
            if published:
                self.metrics.published.inc(len(published))
            for _ in range(failed):
                self.metrics.failed.inc()

    # ------------------------------------------------------------ operations

    async def stats(self) -> OutboxStats:
        """Pending and failed counts and the oldest pending row's age."""
        return await self.store.stats()


def _store(store: OutboxStore | Database, retention: dt.timedelta | None) -> OutboxStore:
    if hasattr(store, "claim_session"):
        if retention is not None:
            raise ConfigurationError(
                "retention= belongs to the store: pass it to the store, not to Relay"
            )
        return cast("OutboxStore", store)
    return outbox_store_for(store, retention=retention)
