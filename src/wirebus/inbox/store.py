"""The ``InboxStore`` port and its in-memory implementation."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..outbox.batch import BatchUnitOfWork

__all__ = ["MAX_EVENT_ID_LENGTH", "InMemoryInbox", "InboxClaim", "InboxStore", "unstorable"]

MAX_EVENT_ID_LENGTH = 255
"""The longest ``ce_id`` (and consumer group), in characters, every inbox stores:
the length of the ``wirebus_inbox`` columns."""


def unstorable(what: str, text: str) -> str | None:
    """Why ``text`` cannot be an inbox key on every database, or None if it can.

    The same rule for every inbox, decided before a handler runs: PostgreSQL
    stores no NUL character and checks the column length (SQLite does
    neither), and a ``str`` decoded from UTF-8 holds nothing else it refuses.

    Example::

        assert unstorable("ce_id", "x" * 300).startswith("ce_id is 300 characters")
    """
    if len(text) > MAX_EVENT_ID_LENGTH:
        return f"{what} is {len(text)} characters, more than {MAX_EVENT_ID_LENGTH} (the inbox's)"
    if "\x00" in text:
        return f"{what} contains a NUL character"
    return None


@dataclasses.dataclass(slots=True)
class InboxClaim:
    """A consumer asks the handler's unit of work to record ``(group, event_id)``.

    Passed with the event to its only handler (``run(event, claim)``): if the
    pipeline has a unit of work, the inbox row is written in that same
    transaction as the handler's state and ``written`` turns true.

    ``batch``, when set, is the consumer's batch the handler's unit of work
    joins instead of opening a transaction: the consumer then writes the
    inbox row with the batch, and ``written`` stays false.
    """

    group: str
    event_id: str
    written: bool = False
    batch: BatchUnitOfWork | None = None


class InboxStore(Protocol):
    """Records ``(consumer group, ce_id)`` pairs of handled events."""

    async def seen(self, group: str, event_id: str) -> bool:
        """Whether ``group`` has handled the event ``event_id`` already."""

    async def mark(self, group: str, event_id: str) -> None:
        """Record that ``group`` handled ``event_id`` (idempotent)."""

    async def seen_many(self, group: str, event_ids: Sequence[str]) -> set[str]:
        """Those of ``event_ids`` that ``group`` has handled already (one round trip)."""

    async def mark_many(self, group: str, event_ids: Sequence[str]) -> None:
        """Record several handled events at once (idempotent)."""

    async def close(self) -> None:
        """Release connections (idempotent)."""


class InMemoryInbox:
    """Inbox of one set of event ids per group: for tests and the embedded default (lost on
    restart)."""

    def __init__(self) -> None:
        self._seen: dict[str, set[str]] = {}  # per group: set operations run in C

    async def seen(self, group: str, event_id: str) -> bool:
        return event_id in self._seen.get(group, ())

    async def mark(self, group: str, event_id: str) -> None:
        self._seen.setdefault(group, set()).add(event_id)

    async def seen_many(self, group: str, event_ids: Sequence[str]) -> set[str]:
        seen = self._seen.get(group)
        return set() if seen is None else seen.intersection(event_ids)

    async def mark_many(self, group: str, event_ids: Sequence[str]) -> None:
        self._seen.setdefault(group, set()).update(event_ids)

    async def close(self) -> None:
        return None
