"""Orchestrated sagas: ordered steps with compensations, persisted state, timeouts, recovery.

Declare a :class:`Saga` with its :class:`Step` s and give it to
``App(sagas=[...])``; handlers start one explicitly with the injectable
:class:`Sagas`. The engine (:class:`SagaEngine`) runs each transition in one
unit of work of the app's pipeline; the runtime polls due timeouts and
recovers interrupted sagas at start-up.

Example::

    from wirebus.saga import Saga, Step

    checkout = Saga("checkout", data=Checkout, key="order_id", start_on=[OrderPlaced],
                    steps=[Step("reserve stock", action=reserve, compensate=release)])
"""

from __future__ import annotations

from .definition import Reply, Saga, Step
from .describe import mermaid
from .engine import SagaEngine, Sagas, StepFailed
from .memory import MemorySagaStore
from .state import SagaConflict, SagaState, SagaStatus, SagaTimeout, StepRecord
from .store import SagaStore

__all__ = [
    "MemorySagaStore",
    "Reply",
    "Saga",
    "SagaConflict",
    "SagaEngine",
    "SagaState",
    "SagaStatus",
    "SagaStore",
    "SagaTimeout",
    "Sagas",
    "Step",
    "StepFailed",
    "StepRecord",
    "mermaid",
]
