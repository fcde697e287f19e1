"""What a saga store keeps: one saga's persisted state, its step history and its timeouts.

These are plain values; the engine (``wirebus.saga.engine``) decides what
they become and a :class:`~wirebus.saga.store.SagaStore` keeps them.

Example::

    state = SagaState.new("checkout", key="o-1", data={"order_id": "o-1"})
    state.status  # SagaStatus.PENDING
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid
from collections.abc import Mapping
from typing import Any

from ..errors import Aborted

__all__ = ["SagaConflict", "SagaState", "SagaStatus", "SagaTimeout", "StepRecord"]


class SagaStatus(enum.StrEnum):
    """Where a saga is in its life; the last two are final."""

    PENDING = "pending"
    """Started, no step run yet."""
    RUNNING = "running"
    """Steps are running forwards (an action may be waiting for its reply)."""
    COMPENSATING = "compensating"
    """A step failed: completed steps are being compensated, last first."""
    COMPLETED = "completed"
    """Every step succeeded."""
    COMPENSATED = "compensated"
    """A step failed and every completed step was compensated."""
    FAILED = "failed"
    """A compensation kept failing: an operator must look (``wirebus saga retry``)."""

    @property
    def final(self) -> bool:
        """No more steps run (``failed`` only moves again by ``wirebus saga retry``)."""
        return self in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED)


@dataclasses.dataclass(frozen=True, slots=True)
class StepRecord:
    """One entry of a saga's history: a step's action or compensation and how it ended."""

    step: str
    phase: str
    """``"action"`` or ``"compensation"``."""
    outcome: str
    """``"started"``, ``"succeeded"``, ``"failed"``, ``"timed out"``, ``"retrying"``,
    ``"circuit open"`` (the step's circuit breaker was open: it did not run, it waits)."""
    at: dt.datetime
    detail: str = ""
    """The error (one line) of a failure, empty otherwise."""

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "phase": self.phase,
            "outcome": self.outcome,
            "at": self.at.isoformat(),
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> StepRecord:
        return cls(
            step=str(value["step"]),
            phase=str(value["phase"]),
            outcome=str(value["outcome"]),
            at=dt.datetime.fromisoformat(str(value["at"])),
            detail=str(value.get("detail", "")),
        )


@dataclasses.dataclass(slots=True)
class SagaState:
    """One saga instance as stored. ``version`` is the optimistic-concurrency counter.

    ``step`` is the index of the step running (forwards) or being compensated
    (backwards); ``data`` is the saga's own JSON-serializable data.
    """

    saga_id: str
    saga_type: str
    key: str
    status: SagaStatus
    step: int
    data: dict[str, Any]
    attempts: int
    """Failed attempts of the current action or compensation."""
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime
    history: list[StepRecord] = dataclasses.field(default_factory=list)
    error: str = ""
    """Why the saga is compensating or failed (one line)."""

    @classmethod
    def new(
        cls, saga_type: str, *, key: str, data: Mapping[str, Any], now: dt.datetime | None = None
    ) -> SagaState:
        """A fresh PENDING saga (version 0: not stored yet)."""
        at = now or dt.datetime.now(dt.UTC)
        return cls(
            saga_id=str(uuid.uuid4()),
            saga_type=saga_type,
            key=key,
            status=SagaStatus.PENDING,
            step=0,
            data=dict(data),
            attempts=0,
            version=0,
            created_at=at,
            updated_at=at,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class SagaTimeout:
    """A due time for one saga step: when it passes and the step has not moved, it times out.

    ``step`` and ``version`` say which wait this is: a timeout whose saga has
    moved on since (its version or step differs) does nothing when it fires.
    """

    timeout_id: str
    saga_id: str
    step: int
    version: int
    due_at: dt.datetime


class SagaConflict(Aborted):
    """Another worker advanced the saga first: its stored version is not the expected one.

    An :class:`~wirebus.errors.Aborted` (ABORTED, retriable): the transition
    is tried again from a fresh read.
    """

    default_reason = "SAGA_CONFLICT"
