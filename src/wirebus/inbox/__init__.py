"""Inbox: which events a consumer group has handled already (redelivery dedup).

``InboxStore`` is the port; ``InMemoryInbox`` is here, ``SqlAlchemyInbox``
(SQLite by default, PostgreSQL) in ``wirebus.inbox.sqlalchemy``.
"""

from __future__ import annotations

from .store import MAX_EVENT_ID_LENGTH, InboxClaim, InboxStore, InMemoryInbox, unstorable

__all__ = ["MAX_EVENT_ID_LENGTH", "InMemoryInbox", "InboxClaim", "InboxStore", "unstorable"]
