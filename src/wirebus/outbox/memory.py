"""``InMemoryOutboxStore``: the outbox in a process's memory, for tests and apps without a database.

Rows are kept in a dict by id; ids are taken when a write adds its records
and rows become visible when it commits, as with a database sequence, so a
write that took its ids first and commits last is relayed all the same. It
keeps every promise of :class:`~wirebus.outbox.store.OutboxStore` (id order,
a backing-off row holds back only its key, failed rows, retention) for one
relay at a time (``shared = False``).

Example::

    store = InMemoryOutboxStore()
    store.append([encoder.record(OrderPlaced(order_id="o-1"))])
    async with Relay(store, broker.publisher(registry, source="shop")) as relay:
        await relay.relay_once()
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

from ..broker import OutgoingRecord
from .rows import SHARDS, pack_headers
from .store import Attempt, OutboxStats, StoredRow, WakesUp, Wakeup

__all__ = ["InMemoryOutboxStore", "InMemoryOutboxWrite"]

_ALL = frozenset(range(SHARDS))


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclasses.dataclass(slots=True)
class _Row:
    id: int
    event_id: str
    topic: str
    key: bytes | None
    value: bytes
    headers: str
    created_at: dt.datetime
    available_at: dt.datetime
    status: str = "pending"
    attempts: int = 0
    last_error: str | None = None
    published_at: dt.datetime | None = None

    def claimed(self) -> tuple[Any, ...]:
        return (
            self.id,
            self.event_id,
            self.topic,
            self.key,
            self.value,
            self.headers,
            self.attempts,
        )


class InMemoryOutboxStore(WakesUp):
    """An outbox held in memory; ``append`` writes rows, a ``Relay`` publishes them."""

    shared = False
    claim_chunks = 1

    def __init__(
        self,
        *,
        retention: dt.timedelta | None = None,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self.retention = retention
        self.clock = clock
        """Timezone-aware now; tests pass one they can move forward."""
        self._rows: dict[int, _Row] = {}
        self._order: list[int] = []  # ids of visible rows, ascending
        self._claimed: set[int] = set()
        self._next_id = 1
        self._shards: frozenset[int] = frozenset()
        self._wakeup = Wakeup()

    # ------------------------------------------------------------ writing

    def begin(self) -> InMemoryOutboxWrite:
        """A write: ids are taken by ``add``, rows appear on ``commit``."""
        return InMemoryOutboxWrite(self)

    def append(self, records: Sequence[OutgoingRecord]) -> list[int]:
        """Write ``records`` (each with a ``ce_id`` header) as committed rows; their ids."""
        write = self.begin()
        ids = write.add(records)
        write.commit()
        return ids

    add = append

    def _take_id(self) -> int:
        row_id = self._next_id
        self._next_id += 1
        return row_id

    def _publish_rows(self, rows: Sequence[_Row]) -> None:
        for row in rows:
            self._rows[row.id] = row
            bisect.insort(self._order, row.id)
        if rows:
            self._wakeup.set()

    def rows(self) -> list[StoredRow]:
        """Every row, in id order (published ones only while retention keeps them)."""
        return [
            StoredRow(
                r.id,
                r.event_id,
                r.key,
                r.value,
                r.status,
                r.attempts,
                r.last_error,
                r.available_at,
                r.published_at,
            )
            for r in (self._rows[i] for i in self._order)
        ]

    # ------------------------------------------------------------ the port

    @property
    def shards(self) -> frozenset[int]:
        return self._shards

    async def start(self) -> None:
        self._shards = _ALL

    async def close(self) -> None:
        self._shards = frozenset()
        self._claimed.clear()

    async def rebalance(self) -> None:
        return None

    async def recover(self) -> None:
        return None

    async def claim_session(self) -> InMemoryClaimSession:
        return InMemoryClaimSession(self, self.clock())

    def now(self) -> dt.datetime:
        return self.clock()

    async def stats(self) -> OutboxStats:
        pending = [r for r in self._rows.values() if r.status == "pending"]
        failed = sum(1 for r in self._rows.values() if r.status == "failed")
        oldest = min((r.created_at for r in pending), default=None)
        age = None if oldest is None else (self.clock() - oldest).total_seconds()
        return OutboxStats(pending=len(pending), failed=failed, oldest_pending_seconds=age)

    async def retry_failed(self) -> int:
        now = self.clock()
        count = 0
        for row in self._rows.values():
            if row.status == "failed":
                row.status, row.attempts, row.available_at = "pending", 0, now
                count += 1
        if count:
            self._wakeup.set()
        return count

    # ------------------------------------------------------------ claims

    def _claim(self, now: dt.datetime, limit: int, after: int) -> list[_Row]:
        rows = self._rows
        waiting = {
            r.key
            for r in rows.values()
            if r.status == "pending"
            and r.last_error is not None
            and r.available_at > now
            and r.key is not None
        }
        start = bisect.bisect_right(self._order, after)
        taken: list[_Row] = []
        for row_id in self._order[start:]:
            row = rows[row_id]
            if (
                row.status != "pending"
                or row.available_at > now
                or row_id in self._claimed
                or (row.key is not None and row.key in waiting)
            ):
                continue
            taken.append(row)
            if len(taken) >= limit:
                break
        self._claimed.update(r.id for r in taken)
        return taken

    def _settle(
        self, claimed: set[int], published: Sequence[int], attempts: Sequence[Attempt]
    ) -> None:
        now = self.clock()
        for row_id in published:
            if self.retention is None:
                self._delete(row_id)
            else:
                row = self._rows[row_id]
                row.status, row.published_at = "published", now
        for attempt in attempts:
            row = self._rows[attempt.row_id]
            row.status, row.attempts = attempt.status, attempt.attempts
            row.last_error, row.available_at = attempt.error, attempt.available_at
        if self.retention is not None and published:
            cutoff = now - self.retention
            for row in list(self._rows.values()):
                at = row.published_at
                if row.status == "published" and at is not None and at < cutoff:
                    self._delete(row.id)
        self._claimed -= claimed

    def _delete(self, row_id: int) -> None:
        del self._rows[row_id]
        del self._order[bisect.bisect_left(self._order, row_id)]


class InMemoryClaimSession:
    """A claim on an :class:`InMemoryOutboxStore` (see ``ClaimSession``)."""

    def __init__(self, store: InMemoryOutboxStore, now: dt.datetime) -> None:
        self._store = store
        self._now = now
        self._after = 0
        self._claimed: set[int] = set()

    async def claim(self, limit: int) -> Sequence[Any]:
        rows = self._store._claim(self._now, limit, self._after)
        if rows:
            self._after = rows[-1].id
        self._claimed.update(r.id for r in rows)
        return [r.claimed() for r in rows]

    async def commit(self, *, published: Sequence[int], attempts: Sequence[Attempt]) -> None:
        self._store._settle(self._claimed, published, attempts)
        self._claimed = set()

    async def rollback(self) -> None:
        self._store._settle(self._claimed, (), ())
        self._claimed = set()


class InMemoryOutboxWrite:
    """One write to an :class:`InMemoryOutboxStore`: ids on ``add``, visible on ``commit``."""

    def __init__(self, store: InMemoryOutboxStore) -> None:
        self._store = store
        self._rows: list[_Row] = []

    def add(self, records: Sequence[OutgoingRecord]) -> list[int]:
        """Stage ``records``; the ids their rows will have."""
        now = self._store.clock()
        staged = [
            _Row(
                id=self._store._take_id(),
                event_id=_event_id(record),
                topic=record.topic,
                key=record.key,
                value=record.value,
                headers=pack_headers(record.headers),
                created_at=now,
                available_at=now,
            )
            for record in records
        ]
        self._rows.extend(staged)
        return [r.id for r in staged]

    def commit(self) -> None:
        """Make the staged rows visible to relays."""
        rows, self._rows = self._rows, []
        self._store._publish_rows(rows)

    def rollback(self) -> None:
        """Drop the staged rows (their ids are never used)."""
        self._rows = []


def _event_id(record: OutgoingRecord) -> str:
    for name, value in record.headers:
        if name == "ce_id":
            return value.decode()
    raise ValueError("an outbox record needs a ce_id header")
