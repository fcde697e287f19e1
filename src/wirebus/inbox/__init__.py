"""Inbox: which events a consumer group has handled already (redelivery dedup).

``InboxStore`` is the port; ``InMemoryInbox`` is here, ``SqlAlchemyInbox``
(SQLite by default, PostgreSQL) in ``wirebus.inbox.sqlalchemy``.
"""

from __future__ import annotations

from .store import InboxClaim, InboxStore, InMemoryInbox

__all__ = ["InMemoryInbox", "InboxClaim", "InboxStore"]
