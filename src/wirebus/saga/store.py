"""The saga store port: where saga state and step timeouts are kept.

A store is used inside one unit of work: the SQLAlchemy store works on the
call's session, so a saga's new state commits in the same transaction as the
outbox rows of what its step sends, and rolls back with them. The in-memory
store (``wirebus.saga.memory``) is for tests and apps without a database.
Every store passes the conformance suite in ``wirebus.testing.saga_suite``.

Rules every store keeps:

- ``insert`` of a (saga type, key) that exists returns ``False`` and changes
  nothing: two concurrent starts are one saga.
- ``update`` writes only when the stored version is ``expected_version``,
  and stores ``version + 1``; otherwise it raises ``SagaConflict``.
- ``claim_due`` returns due timeouts no other open transaction has claimed
  (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, one claimer at a time on
  SQLite) and deletes them when the claiming transaction commits.

Example::

    async def advance(store: SagaStore, saga_id: str) -> None:
        state = await store.get(saga_id)
        state.step += 1
        await store.update(state, expected_version=state.version)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Protocol

from .state import SagaState, SagaStatus, SagaTimeout

__all__ = ["SagaStore"]


class SagaStore(Protocol):
    """Saga state and timeouts, read and written in the current transaction."""

    async def insert(self, state: SagaState) -> bool:
        """Store a new saga (``state.version`` becomes 1); ``False`` if its (type, key) exists."""
        ...

    async def get(self, saga_id: str) -> SagaState | None:
        """The saga with this id, or ``None``."""
        ...

    async def find(self, saga_type: str, key: str) -> SagaState | None:
        """The saga of this type correlated by ``key``, or ``None``."""
        ...

    async def update(self, state: SagaState, *, expected_version: int) -> None:
        """Write ``state`` if the stored version is ``expected_version``, else ``SagaConflict``.

        On success ``state.version`` is ``expected_version + 1``.
        """
        ...

    async def list(
        self,
        *,
        status: SagaStatus | None = None,
        saga_type: str | None = None,
        limit: int = 100,
    ) -> Sequence[SagaState]:
        """Sagas, newest first, optionally of one status and type."""
        ...

    async def unfinished(self, *, updated_before: dt.datetime, limit: int) -> Sequence[SagaState]:
        """Sagas not final (pending, running, compensating) last changed before the given time."""
        ...

    async def add_timeout(self, due: SagaTimeout) -> None:
        """Schedule a step's timeout."""
        ...

    async def cancel_timeouts(self, saga_id: str) -> None:
        """Forget every scheduled timeout of a saga (its step moved on)."""
        ...

    async def claim_due(self, now: dt.datetime, *, limit: int) -> Sequence[SagaTimeout]:
        """Due timeouts claimed by this transaction (removed once it commits)."""
        ...
