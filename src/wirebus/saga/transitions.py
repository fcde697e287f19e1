"""The saga engine's own messages: each transition is one request through the app's pipeline.

Claims of due timeouts and reads (``wirebus saga list``) take a
transaction of their own instead, outside the pipeline: a poll is not a
call, and makes no span.

Sending them through the mediator gives every transition the pipeline's unit
of work (one transaction: the saga's state, what its step's handlers wrote,
the outbox rows of what it sent, the timeout rows), its tracing and its
behaviours, exactly as a user's request. They stay in-process (no protobuf).

Example::

    more = await mediator.send(Advance(saga_id=state.saga_id))
"""

from __future__ import annotations

import contextvars
import dataclasses

from ..messages import Command, Event
from .state import SagaState

__all__ = ["Advance", "Carry", "Due", "Fail", "FireTimeout", "RetrySaga"]


@dataclasses.dataclass(slots=True)
class Carry:
    """The saga as one transition of a drive wrote it: the next one starts from it.

    It saves the next transition's read. It is only a starting point: the
    next update still names the version carried, so a worker that moved the
    saga meanwhile makes it conflict, and the retry reads afresh. The driver
    empties it whenever a transition does not commit.
    """

    state: SagaState | None = None

    def take(self, saga_id: str) -> SagaState | None:
        """The carried state of ``saga_id`` (emptied: each is used once), or ``None``."""
        state, self.state = self.state, None
        return state if state is not None and state.saga_id == saga_id else None


class Advance(Command[bool]):
    """Run the saga's current action or compensation; ``True`` if another can run at once."""

    saga_id: str
    carry: Carry | None = dataclasses.field(default=None, compare=False, repr=False)


class Fail(Command[bool]):
    """Record that the current action or compensation (seen at ``version``) raised ``error``."""

    saga_id: str
    version: int
    error: str
    carry: Carry | None = dataclasses.field(default=None, compare=False, repr=False)


class FireTimeout(Command[bool]):
    """A due wait of a saga (step, version) passed; ``True`` if the saga should be driven."""

    saga_id: str
    step: int
    version: int


class Due(Event):
    """In-process: the saga can move (handled after the commit that made it so).

    ``context`` is the context it was emitted in: the saga is driven in it,
    so its transitions continue the trace (and correlation) of the message
    that moved it.
    """

    saga_id: str
    context: contextvars.Context | None = dataclasses.field(default=None, compare=False)
    state: SagaState | None = dataclasses.field(default=None, compare=False, repr=False)
    """The saga as the emitting transaction wrote it (the drive's first read is saved)."""


class RetrySaga(Command[bool]):
    """An operator's retry: a FAILED saga compensates again (``True`` if it was failed)."""

    saga_id: str
