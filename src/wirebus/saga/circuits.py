"""A saga step guarded by a circuit breaker: run it through its circuit, or wait for it.

A step with ``Step(breaker=)`` (or ``Saga(breaker=)``) runs its action, its
send or its compensation through the circuit ``saga:<saga>.<step>`` of the
mediator (``mediator.circuits``; the breaker's ``name`` instead, if it has
one: circuits of one name are one). Its state is the
``wirebus_circuit_breaker_state{breaker="saga:<saga>.<step>"}`` gauge.

An open circuit is not a failure of the step: nothing ran, so there is
nothing to roll back. The transition records ``"circuit open"`` in the
saga's history, schedules a due row in the timeouts table (the saga's
``backoff``, and at least until the circuit lets a probe through) and
commits; the poller then tries the step again. An action refused
``saga.step_attempts`` times fails and the saga compensates. A compensation
waits for its circuit as long as it stays open: only the calls that ran
spend its ``compensation_attempts``.

Example::

    refused = await guarded(circuit, lambda: action(data))
    if refused is not None:      # the circuit is open: the action did not run
        more = await wait_for_circuit(saga, state, store, refused, ACTION)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..breaker import Circuit
from ..errors import CircuitOpen
from .definition import Saga
from .moves import ACTION, compensate_from, one_line, record, schedule
from .state import SagaState
from .store import SagaStore

__all__ = ["guarded", "wait_for_circuit"]

log = logging.getLogger(__name__)


async def guarded(circuit: Circuit, run: Callable[[], Awaitable[Any]]) -> CircuitOpen | None:
    """``await run()`` through ``circuit``; the ``CircuitOpen`` that refused it, or ``None``.

    A ``CircuitOpen`` raised by ``run`` itself (a handler's own breaker, in
    the step) propagates: that step ran, and fails.
    """
    ran = False
    try:
        async with circuit.guard():
            ran = True
            await run()
    except CircuitOpen as exc:
        if ran:
            raise
        return exc
    return None


async def wait_for_circuit(
    saga: Saga[Any], state: SagaState, store: SagaStore, refused: CircuitOpen, phase: str
) -> bool:
    """Write that the current step's circuit refused it; ``True`` if the saga can move on.

    The step waits (a due row) and is tried again; an action refused
    ``saga.step_attempts`` times fails instead, and the saga compensates.
    """
    step = saga.steps[state.step]
    expected = state.version
    attempts = state.attempts + 1
    if phase == ACTION:
        state.attempts = attempts
        if attempts >= saga.step_attempts:
            error = f"{step.name}: {one_line(refused)} ({attempts} times)"
            record(state, step.name, ACTION, "failed", error)
            compensate_from(saga, state, state.step - 1, error)
            await store.update(state, expected_version=expected)
            return not state.status.final
    record(state, step.name, phase, "circuit open", one_line(refused))
    await store.update(state, expected_version=expected)
    await schedule(store, state, max(refused.retry_after, saga.backoff.delay(attempts)))
    log.info(
        "saga %s %s: circuit %s is open, %r waits", saga.name, state.key, refused.circuit, step.name
    )
    return False
