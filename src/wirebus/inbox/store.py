"""The ``InboxStore`` port and its in-memory implementation."""

from __future__ import annotations

from typing import Protocol

__all__ = ["InMemoryInbox", "InboxStore"]


class InboxStore(Protocol):
    """Records ``(consumer group, ce_id)`` pairs of handled events."""

    async def seen(self, group: str, event_id: str) -> bool:
        """Whether ``group`` has handled the event ``event_id`` already."""

    async def mark(self, group: str, event_id: str) -> None:
        """Record that ``group`` handled ``event_id`` (idempotent)."""

    async def close(self) -> None:
        """Release connections (idempotent)."""


class InMemoryInbox:
    """Inbox in a set: for tests and the embedded default (lost on restart)."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()

    async def seen(self, group: str, event_id: str) -> bool:
        return (group, event_id) in self._seen

    async def mark(self, group: str, event_id: str) -> None:
        self._seen.add((group, event_id))

    async def close(self) -> None:
        return None
