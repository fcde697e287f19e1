"""Transactional outbox: events commit with the handler's state, a relay publishes them.

- :class:`UnitOfWork` (request scope): the handler's ``AsyncSession``; on
  success its commit writes the emitted events as outbox rows in the same
  transaction. If the handler raises, nothing persists.
- :class:`Relay`: claims pending rows in order and publishes them with the
  idempotent producer, marking them only after the broker acknowledged.

Needs the ``sql`` extra (SQLAlchemy async; aiosqlite, asyncpg).
"""

from __future__ import annotations

from .relay import Relay, RelayStats
from .uow import DatabaseProvider, UnitOfWork

__all__ = ["DatabaseProvider", "Relay", "RelayStats", "UnitOfWork"]
