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

__all__ = ["Advance", "Due", "Fail", "FireTimeout", "RetrySaga"]


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


class Due(Event):
    """In-process: the saga can move (handled after the commit that made it so).

    ``context`` is the context it was emitted in: the saga is driven in it,
    so its transitions continue the trace (and correlation) of the message
    that moved it.
    """

    saga_id: str
    context: contextvars.Context | None = dataclasses.field(default=None, compare=False)


class RetrySaga(Command[bool]):
    """An operator's retry: a FAILED saga compensates again (``True`` if it was failed)."""

    saga_id: str
