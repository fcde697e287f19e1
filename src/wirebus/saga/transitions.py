"""The saga engine's own messages: each transition is one request through the app's pipeline.

Sending them through the mediator gives every transition the pipeline's unit
of work (one transaction: the saga's state, what its step's handlers wrote,
the outbox rows of what it sent, the timeout rows), its tracing and its
behaviours, exactly as a user's request. They stay in-process (no protobuf).

Example::

    more = await mediator.send(Advance(saga_id=state.saga_id))
"""

from __future__ import annotations

import datetime as dt

from ..messages import Command, Event, Query
from .state import SagaState, SagaStatus

__all__ = [
    "Advance",
    "ClaimDue",
    "Due",
    "Fail",
    "FindSaga",
    "FireTimeout",
    "GetSaga",
    "ListSagas",
    "RetrySaga",
    "Unfinished",
]


class Advance(Command[bool]):
    """Run the saga's current action or compensation; ``True`` if another can run at once."""

    saga_id: str


class Fail(Command[bool]):
    """Record that the current action or compensation (seen at ``version``) raised ``error``."""

    saga_id: str
    version: int
    error: str


class FireTimeout(Command[bool]):
    """A due wait of a saga (step, version) passed; ``True`` if the saga should be driven."""

    saga_id: str
    step: int
    version: int


class ClaimDue(Command[list[tuple[str, int, int]]]):
    """Claim up to ``limit`` due timeouts: ``(saga_id, step, version)`` of each."""

    limit: int


class Unfinished(Command[list[tuple[str, int, int, bool]]]):
    """Sagas to recover: ``(saga_id, step, version, overdue wait)`` of each."""

    updated_before: dt.datetime
    limit: int


class Due(Event):
    """In-process: the saga can move (handled after the commit that made it so)."""

    saga_id: str


class GetSaga(Query[SagaState | None]):
    """One saga by id."""

    saga_id: str


class FindSaga(Query[SagaState | None]):
    """One saga by type and correlation key."""

    saga_type: str
    key: str


class ListSagas(Query[list[SagaState]]):
    """Sagas, newest first, optionally of one status and type."""

    status: SagaStatus | None
    saga_type: str | None
    limit: int


class RetrySaga(Command[bool]):
    """An operator's retry: a FAILED saga compensates again (``True`` if it was failed)."""

    saga_id: str
