"""``MemorySagaStore``: saga state and timeouts in memory, for tests and apps without a database.

It keeps every rule of :class:`~wirebus.saga.store.SagaStore`. There are
no transactions: each call takes effect at once, and ``claim_due`` removes
the timeouts it returns (a claim cannot be rolled back). States are copied
in and out, so a caller's object is never the stored one: changing a state
you got does nothing until you ``update`` it. Times come back in UTC, as
from a database.

Every call runs without awaiting, so on one event loop two starts of one
saga, or two updates of one version, never interleave: one wins.

Example::

    store = MemorySagaStore()
    state = SagaState.new("checkout", key="o-1", data={"order_id": "o-1"})
    assert await store.insert(state)            # state.version == 1
    assert not await store.insert(SagaState.new("checkout", key="o-1", data={}))
    state.step = 1
    await store.update(state, expected_version=1)  # state.version == 2
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
from collections.abc import Sequence

from .state import SagaConflict, SagaState, SagaStatus, SagaTimeout

__all__ = ["MemorySagaStore"]


def _copy(state: SagaState) -> SagaState:
    """A copy sharing nothing mutable with ``state`` (``data`` may be nested)."""
    return dataclasses.replace(state, data=copy.deepcopy(state.data), history=list(state.history))


def _kept(state: SagaState) -> SagaState:
    """The copy to store: times in UTC, as a database gives them back."""
    kept = _copy(state)
    kept.created_at, kept.updated_at = _utc(kept.created_at), _utc(kept.updated_at)
    return kept


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _newest_first(state: SagaState) -> tuple[dt.datetime, str]:
    return (state.created_at, state.saga_id)


class MemorySagaStore:
    """A :class:`~wirebus.saga.store.SagaStore` held in dicts; one per app or test."""

    def __init__(self) -> None:
        self._sagas: dict[str, SagaState] = {}
        self._by_key: dict[tuple[str, str], str] = {}
        self._timeouts: dict[str, SagaTimeout] = {}

    async def insert(self, state: SagaState) -> bool:
        """Store a new saga at version 1; ``False``, changing nothing, if its (type, key) exists."""
        correlation = (state.saga_type, state.key)
        if correlation in self._by_key or state.saga_id in self._sagas:
            return False
        state.version = 1
        self._sagas[state.saga_id] = _kept(state)
        self._by_key[correlation] = state.saga_id
        return True

    async def get(self, saga_id: str) -> SagaState | None:
        """A copy of the saga with this id, or ``None``."""
        stored = self._sagas.get(saga_id)
        return None if stored is None else _copy(stored)

    async def find(self, saga_type: str, key: str) -> SagaState | None:
        """A copy of the saga of this type correlated by ``key``, or ``None``."""
        saga_id = self._by_key.get((saga_type, key))
        return None if saga_id is None else await self.get(saga_id)

    async def update(self, state: SagaState, *, expected_version: int) -> None:
        """Write ``state`` at ``expected_version + 1``, else ``SagaConflict``, writing nothing."""
        stored = self._sagas.get(state.saga_id)
        if stored is None or stored.version != expected_version:
            found = "no saga" if stored is None else f"version {stored.version}"
            raise SagaConflict(
                f"saga {state.saga_id}: expected version {expected_version}, found {found}"
            )
        written = _kept(state)
        written.version = expected_version + 1
        # The correlation is fixed at insert: an update cannot move a saga to another key.
        written.saga_type, written.key = stored.saga_type, stored.key
        self._sagas[state.saga_id] = written
        state.version = written.version

    async def list(
        self,
        *,
        status: SagaStatus | None = None,
        saga_type: str | None = None,
        limit: int = 100,
    ) -> Sequence[SagaState]:
        """Copies of sagas, newest (created) first, optionally of one status and type."""
        chosen = [
            s
            for s in self._sagas.values()
            if (status is None or s.status == status)
            and (saga_type is None or s.saga_type == saga_type)
        ]
        chosen.sort(key=_newest_first, reverse=True)
        return [_copy(s) for s in chosen[:limit]]

    async def unfinished(self, *, updated_before: dt.datetime, limit: int) -> Sequence[SagaState]:
        """Copies of sagas not final, last changed before ``updated_before``, least recent first."""
        chosen = [
            s for s in self._sagas.values() if not s.status.final and s.updated_at < updated_before
        ]
        chosen.sort(key=lambda s: (s.updated_at, s.saga_id))
        return [_copy(s) for s in chosen[:limit]]

    async def add_timeout(self, due: SagaTimeout) -> None:
        """Schedule a step's timeout (a timeout with the same id is replaced)."""
        self._timeouts[due.timeout_id] = dataclasses.replace(due, due_at=_utc(due.due_at))

    async def cancel_timeouts(self, saga_id: str) -> None:
        """Forget every scheduled timeout of a saga."""
        for timeout_id in [t.timeout_id for t in self._timeouts.values() if t.saga_id == saga_id]:
            del self._timeouts[timeout_id]

    async def claim_due(self, now: dt.datetime, *, limit: int) -> Sequence[SagaTimeout]:
        """Up to ``limit`` timeouts due at ``now``, earliest first, removed as they are returned."""
        due = sorted(
            (t for t in self._timeouts.values() if t.due_at <= now),
            key=lambda t: (t.due_at, t.timeout_id),
        )[:limit]
        for timeout in due:
            del self._timeouts[timeout.timeout_id]
        return due
