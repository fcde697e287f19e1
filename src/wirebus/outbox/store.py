"""``OutboxStore``: the port a relay publishes an outbox through.

A relay needs little from where the rows live: a lifecycle (``start`` /
``close``; leases and LISTEN on PostgreSQL, the per-file lock on SQLite), the
shards it may relay (``rebalance``), claims of pending rows in id order
(:class:`ClaimSession`), a wake-up when rows arrive, a clock, stats and a
requeue of failed rows. The relay decides what happens to each row (the
attempt policy, backoff, outage detection); the store only applies it.

Implementations: :class:`~wirebus.outbox.memory.InMemoryOutboxStore`,
:class:`~wirebus.outbox.sqlite.SqliteOutboxStore`,
:class:`~wirebus.outbox.postgres.PostgresOutboxStore`. Every one passes the
conformance suite :mod:`wirebus.testing.outbox_suite`.

What a claim promises (every store):

- rows come in id order, only ``pending`` ones whose ``available_at`` passed;
- a row waiting out its backoff (pending, with an error, ``available_at`` in
  the future) holds back every other row of its key, and only those;
- no ``id > last_seen`` cursor across sessions: a row committed late with a
  lower id is claimed by the next session;
- rows claimed by a session stay claimed (invisible to other relays) until the
  session commits or rolls back; on rollback they are pending as before.

Example (what :class:`~wirebus.outbox.Relay` does, in short)::

    await store.start()
    await store.rebalance()
    session = await store.claim_session()
    rows = await session.claim(500)
    results = await publisher.send_records_settled(HeaderReader().records(rows))
    await session.commit(published=[row[ID] for row in rows], attempts=[])
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any, Protocol

__all__ = [
    "Attempt",
    "ClaimSession",
    "OutboxStats",
    "OutboxStore",
    "StoredRow",
    "WakesUp",
    "Wakeup",
]


@dataclasses.dataclass(frozen=True, slots=True)
class OutboxStats:
    """Outbox lag: what waits to be published, and for how long."""

    pending: int
    failed: int
    oldest_pending_seconds: float | None


@dataclasses.dataclass(frozen=True, slots=True)
class Attempt:
    """A failed publish of one row, as the relay decided to record it.

    ``status`` is ``"pending"`` (tried again from ``available_at``) or
    ``"failed"`` (parked until ``retry_failed``).
    """

    row_id: int
    status: str
    attempts: int
    error: str
    available_at: dt.datetime


@dataclasses.dataclass(frozen=True, slots=True)
class StoredRow:
    """One outbox row as a store holds it (for inspection and tests)."""

    id: int
    event_id: str
    key: bytes | None
    value: bytes
    status: str
    attempts: int
    last_error: str | None
    available_at: dt.datetime
    published_at: dt.datetime | None


class ClaimSession(Protocol):
    """One claim: rows taken by :meth:`claim` stay claimed until commit or rollback.

    Rows are sequences with the columns of :data:`wirebus.outbox.rows.CLAIMED`
    (``headers`` as stored by ``pack_headers``), read by position.
    """

    async def claim(self, limit: int) -> Sequence[Any]:
        """Up to ``limit`` more rows that may go now, after those this session claimed."""

    async def commit(self, *, published: Sequence[int], attempts: Sequence[Attempt]) -> None:
        """Settle the claimed rows and end the session.

        ``published`` rows are deleted (or, with retention, marked published
        and older published rows purged); each ``Attempt`` is recorded;
        every other claimed row stays pending, untouched.
        """

    async def rollback(self) -> None:
        """End the session changing nothing: every claimed row is pending as before."""


class OutboxStore(Protocol):
    """Where a relay finds its rows (see the module docstring for what a claim promises)."""

    shared: bool
    """Several relays (each with its own store object) may split this outbox's shards."""

    claim_chunks: int
    """How many claims a relay spreads one batch over (claiming ahead while sending)."""

    @property
    def shards(self) -> frozenset[int]:
        """The shards this store's relay may relay now (empty: standing by)."""

    async def start(self) -> None:
        """Connect, lock or lease; the first shards are held when it returns."""

    async def close(self) -> None:
        """Release shards, locks and connections (idempotent); rows stay."""

    async def rebalance(self) -> None:
        """Take (or give back) shards: a fair share, or all of them for a sole relay."""

    async def recover(self) -> None:
        """After a failed pass: reconnect what may be broken (never raises)."""

    async def claim_session(self) -> ClaimSession:
        """Begin a claim of this store's shards."""

    def now(self) -> dt.datetime:
        """The store's clock (timezone-aware UTC): claims, backoff and retention use it."""

    def arm_wakeup(self) -> None:
        """From now on, rows that arrive wake the next :meth:`wait_for_rows`."""

    async def wait_for_rows(self, seconds: float) -> None:
        """Until rows arrived (since :meth:`arm_wakeup`) or :meth:`wake`, at most ``seconds``."""

    def wake(self) -> None:
        """End the current (or next) :meth:`wait_for_rows` now."""

    async def stats(self) -> OutboxStats:
        """Pending and failed counts and the oldest pending row's age."""

    async def retry_failed(self) -> int:
        """Requeue every failed row (attempts from zero); the number requeued."""


class Wakeup:
    """The wake-up of a store: an event set by notifications (or ``wake``), cleared by ``arm``.

    Example::

        wakeup = Wakeup()
        wakeup.arm()
        await wakeup.wait(1.0)   # returns early once wakeup.set() is called
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def arm(self) -> None:
        self._event.clear()

    def set(self, *_: object) -> None:
        """Wake (accepts and ignores a listener's arguments)."""
        self._event.set()

    async def wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), seconds)


class WakesUp:
    """The wake-up half of :class:`OutboxStore`, over a :class:`Wakeup` (stores inherit it)."""

    _wakeup: Wakeup

    def arm_wakeup(self) -> None:
        self._wakeup.arm()

    async def wait_for_rows(self, seconds: float) -> None:
        await self._wakeup.wait(seconds)

    def wake(self) -> None:
        self._wakeup.set()
