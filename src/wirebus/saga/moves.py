"""How a saga's state moves: the parts of every transition that only touch the state.

The engine (``wirebus.saga.engine``) reads a saga, runs its step, and uses
these to write what happened: a history entry, the next step forwards, the
step to compensate next, a wait in the timeouts table.

Example::

    record(state, "reserve stock", ACTION, "succeeded")
    forward(saga, state)            # RUNNING at the next step, or COMPLETED
"""

from __future__ import annotations

import contextvars
import datetime as dt
import uuid
from typing import Any

from ..errors import WirebusError
from .definition import Saga
from .state import SagaState, SagaStatus, SagaTimeout, StepRecord
from .store import SagaStore
from .transitions import Due

__all__ = [
    "ACTION",
    "COMPENSATION",
    "StepFailed",
    "compensate_from",
    "due",
    "forward",
    "now",
    "one_line",
    "record",
    "schedule",
    "waiting",
]

ACTION, COMPENSATION = "action", "compensation"


class StepFailed(WirebusError):
    """An action or compensation raised: its transaction rolled back; the failure comes next."""

    def __init__(self, version: int, error: str) -> None:
        super().__init__(error)
        self.version = version
        self.error = error


def now() -> dt.datetime:
    """The current time, timezone-aware UTC."""
    return dt.datetime.now(dt.UTC)


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message``: how a step's error is recorded."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def due(state: SagaState) -> Due:
    """Drive ``state``'s saga after this commit, in the context of what moved it.

    ``state`` is carried to the drive's first transition: the caller writes
    it in this transaction and does not change it afterwards.
    """
    return Due(saga_id=state.saga_id, context=contextvars.copy_context(), state=state)


def waiting(saga: Saga[Any], state: SagaState) -> bool:
    """Whether the saga sent its current step's message and waits for a reply."""
    if state.status is not SagaStatus.RUNNING or state.step >= len(saga.steps):
        return False
    step = saga.steps[state.step]
    if not step.messaging or not state.history:
        return False
    last = state.history[-1]
    return (last.step, last.phase, last.outcome) == (step.name, ACTION, "started")


def forward(saga: Saga[Any], state: SagaState) -> None:
    """The current step succeeded: the next one is current (or the saga completed)."""
    state.step += 1
    state.attempts = 0
    state.status = SagaStatus.COMPLETED if state.step >= len(saga.steps) else SagaStatus.RUNNING


def compensate_from(saga: Saga[Any], state: SagaState, index: int, error: str) -> None:
    """Compensate step ``index`` next (the last one before it with a compensation)."""
    while index >= 0 and saga.compensations[index] is None:
        index -= 1
    state.error = error
    state.attempts = 0
    if index < 0:
        state.status = SagaStatus.COMPENSATED
        state.step = 0
    else:
        state.status = SagaStatus.COMPENSATING
        state.step = index


def record(state: SagaState, step: str, phase: str, outcome: str, detail: str = "") -> None:
    """Add a history entry (now) to ``state``."""
    at = now()
    state.history.append(StepRecord(step=step, phase=phase, outcome=outcome, at=at, detail=detail))
    state.updated_at = at


async def schedule(store: SagaStore, state: SagaState, seconds: float) -> None:
    """A wait of ``state``'s current (step, version), due in ``seconds``."""
    due = SagaTimeout(
        timeout_id=str(uuid.uuid4()),
        saga_id=state.saga_id,
        step=state.step,
        version=state.version,
        due_at=now() + dt.timedelta(seconds=seconds),
    )
    await store.add_timeout(due)
