"""Transactional outbox: events commit with the handler's state, a relay publishes them.

- :class:`OutboxStore` (port): where a relay finds its rows;
  :class:`InMemoryOutboxStore`, :class:`SqliteOutboxStore` and
  :class:`PostgresOutboxStore` implement it (``outbox_store_for(database)``
  picks the SQL one).
- :class:`UnitOfWork` (request scope): the handler's ``AsyncSession``; on
  success its commit writes the emitted events as outbox rows in the same
  transaction. If the handler raises, nothing persists.
- :class:`Relay`: claims pending rows in order and publishes them with the
  idempotent producer, settling them only after the broker acknowledged.

The SQL stores and the unit of work need the ``sql`` extra (SQLAlchemy
async; aiosqlite, asyncpg); the relay and the in-memory store do not.

Example::

    from wirebus.outbox import InMemoryOutboxStore, Relay

    store = InMemoryOutboxStore()
    async with Relay(store, publisher) as relay:
        await relay.run()
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .memory import InMemoryOutboxStore
from .relay import Relay, RelayStats, outbox_stats, outbox_store_for, retry_failed
from .store import Attempt, ClaimSession, OutboxStats, OutboxStore, StoredRow

if TYPE_CHECKING:
    from .postgres import PostgresOutboxStore
    from .sqlite import SqliteOutboxStore
    from .uow import DatabaseProvider, UnitOfWork

__all__ = [
    "Attempt",
    "ClaimSession",
    "DatabaseProvider",
    "InMemoryOutboxStore",
    "OutboxStats",
    "OutboxStore",
    "PostgresOutboxStore",
    "Relay",
    "RelayStats",
    "SqliteOutboxStore",
    "StoredRow",
    "UnitOfWork",
    "outbox_stats",
    "outbox_store_for",
    "retry_failed",
]

# Names that need SQLAlchemy: imported when first used, so that the relay and
# the in-memory store work without the ``sql`` extra.
_LAZY = {
    "DatabaseProvider": ".uow",
    "UnitOfWork": ".uow",
    "PostgresOutboxStore": ".postgres",
    "SqliteOutboxStore": ".sqlite",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
