"""The saga engine: each transition of a saga's state machine, and the drivers that chain them.

A transition runs inside one unit of work (the pipeline's, through the
mediator: see ``wirebus.saga.transitions``) and reads and writes the saga
through the store of that unit of work. Its update names the version it read
(optimistic concurrency): a worker that lost the race gets ``SagaConflict``,
its transaction rolls back, and the driver tries the transition again from a
fresh read (``conflict_tries`` times, then the error surfaces).

States, forwards then backwards::

    PENDING -> RUNNING (step i, in-process: runs and commits; messaging: sent, waiting)
            -> COMPLETED
    a failed action, a "fail" reply or a timeout at step i
            -> COMPENSATING (steps i-1 .. 0 with a compensation, last first) -> COMPENSATED
    a compensation failing ``compensation_attempts`` times -> FAILED (``wirebus saga retry``)

A failing compensation is tried again after ``saga.backoff.delay(attempts)``
through the timeouts table (nothing sleeps holding a transaction).

A step with a circuit breaker (``Step(breaker=)``) runs through its circuit;
while it is open the step waits and is tried again (``wirebus.saga.circuits``).

A drive carries the state each transition wrote to the next one
(:class:`~wirebus.saga.transitions.Carry`), which saves its read; the
version check still guards it, and a conflict reads afresh.

Example::

    engine = app.saga_engine(mediator)
    await engine.fire_due()        # what the runtime's poller does
    await engine.recover()         # what the runtime does at start-up
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from ..context import Context
from ..db_errors import database_unreachable
from ..errors import ConfigurationError, LifecycleError
from .circuits import guarded, wait_for_circuit
from .definition import Saga
from .moves import (
    ACTION,
    COMPENSATION,
    StepFailed,
    compensate_from,
    due,
    forward,
    now,
    one_line,
    record,
    schedule,
    waiting,
)
from .state import SagaConflict, SagaState, SagaStatus
from .store import SagaStore
from .transitions import Advance, Carry, Fail, FireTimeout, RetrySaga

if TYPE_CHECKING:
    from ..breaker import Circuit
    from ..mediator import Mediator
    from ..metrics import Metrics

__all__ = ["SagaEngine"]

log = logging.getLogger(__name__)


class SagaEngine:
    """Runs the sagas of one mediator; transitions take the call's :class:`Context`.

    ``stores(ctx)`` is the saga store of a call's unit of work (the
    SQLAlchemy store on its session, or one in-memory store);
    ``transaction()`` opens a store in a transaction of its own (claims of
    due timeouts and reads, outside the pipeline).
    """

    def __init__(
        self,
        sagas: Sequence[Saga[Any]],
        *,
        stores: Callable[[Context], SagaStore],
        transaction: Callable[[], AbstractAsyncContextManager[SagaStore]],
        mediator: Callable[[], Mediator],
        conflict_tries: int = 5,
        metrics: Metrics | None = None,
    ) -> None:
        if conflict_tries < 1:
            raise ConfigurationError(f"conflict_tries must be at least 1, not {conflict_tries}")
        self.sagas: dict[str, Saga[Any]] = {}
        for saga in sagas:
            if saga.name in self.sagas:
                raise ConfigurationError(f"two sagas are named {saga.name!r}")
            self.sagas[saga.name] = saga
        self.stores = stores
        self.transaction = transaction
        self.conflict_tries = conflict_tries
        self.metrics = metrics
        """Counts finished and failed sagas (set by the runtime when it serves metrics)."""
        self._mediator = mediator
        from ..outbox.uow import joining  # SQLAlchemy is optional: not at import time

        self._joining = joining

    # ------------------------------------------------------------ transitions

    async def start(
        self, saga: Saga[Any], ctx: Context, *, data: Any, key: str | None = None
    ) -> SagaState | None:
        """Store a new saga (PENDING); ``None`` if one of its type and key exists already."""
        key = key if key is not None else saga.key_from(data)
        state = SagaState.new(saga.name, key=key, data=saga.dump(data))
        if not await self.stores(ctx).insert(state):
            log.debug("saga %s %s exists already: not started again", saga.name, key)
            return None
        ctx.emit(due(state))  # driven once this commits
        return state

    async def advance(self, saga_id: str, ctx: Context, carry: Carry | None = None) -> bool:
        """Run the current action or compensation; ``True`` if the next can run at once.

        ``carry`` holds the state the drive's previous transition wrote (its
        read is saved), and gets the state this one writes.
        """
        store = self.stores(ctx)
        state = carry.take(saga_id) if carry is not None else None
        if state is None:
            state = await store.get(saga_id)
        if state is None or state.status.final:
            return False
        saga = self._saga(state)
        if state.status is SagaStatus.COMPENSATING:
            more = await self._compensate(saga, state, store, ctx)
        elif waiting(saga, state):
            return False
        else:
            more = await self._act(saga, state, store, ctx)
        if carry is not None:  # both wrote the state (its version is the stored one)
            carry.state = state
        return more

    async def fail(
        self, saga_id: str, version: int, error: str, ctx: Context, carry: Carry | None = None
    ) -> bool:
        """Record a failed action (compensate) or compensation (retry later, or FAILED)."""
        store = self.stores(ctx)
        state = await store.get(saga_id)
        if state is None or state.version != version or state.status.final:
            return False  # another worker moved it meanwhile: it drives it
        saga = self._saga(state)
        expected = state.version
        step = saga.steps[state.step]
        if state.status is not SagaStatus.COMPENSATING:
            record(state, step.name, ACTION, "failed", error)
            compensate_from(saga, state, state.step - 1, error)
            await store.update(state, expected_version=expected)
            self._count(state)
            if carry is not None:
                carry.state = state
            return not state.status.final
        state.attempts += 1
        if state.attempts >= saga.compensation_attempts:
            record(state, step.name, COMPENSATION, "failed", error)
            state.status = SagaStatus.FAILED
            state.error = f"compensating {step.name!r} failed {state.attempts} times: {error}"
            await store.update(state, expected_version=expected)
            self._count(state)
            log.error("saga %s %s failed: %s", saga.name, state.key, state.error)
            return False
        record(state, step.name, COMPENSATION, "retrying", error)
        await store.update(state, expected_version=expected)
        delay = saga.backoff.delay(state.attempts)
        await schedule(store, state, delay)
        return False

    async def reply(self, saga: Saga[Any], message: Any, ctx: Context) -> None:
        """A reply event arrived: advance the saga waiting for it, or do nothing (say so)."""
        store = self.stores(ctx)
        key = saga.key_from(message)
        state = await store.find(saga.name, key)
        kind = type(message).__qualname__
        if state is None or not waiting(saga, state):
            log.debug("%s for saga %s %s: not waiting for it, ignored", kind, saga.name, key)
            return
        step = saga.steps[state.step]
        meaning = step.replies.get(type(message))
        if meaning is None:
            log.debug(
                "%s for saga %s %s: not a reply of %r, ignored", kind, saga.name, key, step.name
            )
            return
        expected = state.version
        data = saga.load(state.data)
        outcome = meaning if isinstance(meaning, str) else (meaning(data, message) or "ok")
        state.data = saga.dump(data)
        await store.cancel_timeouts(state.saga_id)
        if outcome == "ok":
            record(state, step.name, ACTION, "succeeded", kind)
            forward(saga, state)
        else:
            record(state, step.name, ACTION, "failed", kind)
            compensate_from(saga, state, state.step - 1, f"{step.name}: {kind}")
        await store.update(state, expected_version=expected)
        self._count(state)
        if not state.status.final:
            ctx.emit(due(state))

    async def fire(self, saga_id: str, step: int, version: int, ctx: Context) -> bool:
        """A wait (step, version) is due: time out the step, or resume a compensation."""
        store = self.stores(ctx)
        state = await store.get(saga_id)
        if state is None or state.status.final or (state.step, state.version) != (step, version):
            log.debug("timeout of saga %s at step %d: it moved on, nothing to do", saga_id, step)
            return False
        saga = self._saga(state)
        if state.status is SagaStatus.COMPENSATING:
            return True  # a compensation's retry is due
        if not waiting(saga, state):
            return True
        name = saga.steps[step].name
        expected = state.version
        await store.cancel_timeouts(saga_id)
        record(state, name, ACTION, "timed out")
        compensate_from(saga, state, step - 1, f"{name}: no reply in time")
        await store.update(state, expected_version=expected)
        self._count(state)
        return not state.status.final

    async def _claim(self, limit: int) -> list[tuple[str, int, int]]:
        """Claim due timeouts, in a transaction of their own (committed: they are taken)."""
        async with self.transaction() as store:
            claimed = await store.claim_due(now(), limit=limit)
        return [(t.saga_id, t.step, t.version) for t in claimed]

    async def _unfinished(
        self, updated_before: dt.datetime, limit: int
    ) -> list[tuple[str, int, int, bool]]:
        """Sagas to resume: not final, and not waiting on a wait that is still live."""
        at = now()
        found: list[tuple[str, int, int, bool]] = []
        async with self.transaction() as store:
            states = await store.unfinished(updated_before=updated_before, limit=limit)
        for state in states:
            saga = self.sagas.get(state.saga_type)
            if saga is None:
                continue  # a saga type this app does not run
            overdue = False
            if waiting(saga, state):
                timeout = saga.steps[state.step].timeout
                if timeout is None or state.updated_at + dt.timedelta(seconds=timeout) > at:
                    continue  # its reply or its timeout row will move it
                overdue = True
            found.append((state.saga_id, state.step, state.version, overdue))
        return found

    async def reopen(self, saga_id: str, ctx: Context) -> bool:
        """A FAILED saga compensates again from the step that kept failing."""
        store = self.stores(ctx)
        state = await store.get(saga_id)
        if state is None or state.status is not SagaStatus.FAILED:
            return False
        saga = self._saga(state)
        expected = state.version
        record(state, saga.steps[state.step].name, COMPENSATION, "retrying", "operator")
        state.status = SagaStatus.COMPENSATING
        state.attempts = 0
        await store.update(state, expected_version=expected)
        ctx.emit(due(state))
        return True

    # ------------------------------------------------------------ reading (own transactions)

    async def get(self, saga_id: str) -> SagaState | None:
        """The saga with this id."""
        async with self.transaction() as store:
            return await store.get(saga_id)

    async def find(self, saga: Saga[Any] | str, key: str) -> SagaState | None:
        """The saga of this type correlated by ``key``."""
        name = saga if isinstance(saga, str) else saga.name
        async with self.transaction() as store:
            return await store.find(name, key)

    async def list(
        self,
        *,
        status: SagaStatus | None = None,
        saga_type: str | None = None,
        limit: int = 100,
    ) -> list[SagaState]:
        """Sagas, newest first (``status=SagaStatus.FAILED``: what needs an operator)."""
        async with self.transaction() as store:
            found = await store.list(status=status, saga_type=saga_type, limit=limit)
        return [*found]

    async def retry(self, saga_id: str) -> bool:
        """``wirebus saga retry``: a FAILED saga compensates again (``False``: it is not failed)."""
        return bool(await self._send(RetrySaga(saga_id=saga_id)))

    # ------------------------------------------------------------ drivers

    async def drive(self, saga_id: str, state: SagaState | None = None) -> None:
        """Run transitions of one saga until it waits, finishes or schedules a retry.

        ``state``: the saga as a committed transaction just wrote it (saves a read).
        """
        carry = Carry(state)
        for _ in range(4 * max(len(s.steps) for s in self.sagas.values()) + 8):
            try:
                more = await self._transition(saga_id, carry)
            except Exception as exc:
                if not database_unreachable(exc):
                    raise
                # A busy or absent database is no failure of the step (taken for
                # one, it would compensate a saga that did nothing wrong): the
                # transition rolled back; the poller drives the saga again later.
                log.warning("saga %s waits for the database: %s", saga_id, one_line(exc))
                await self._reschedule(saga_id)
                return
            if not more:
                return

    async def _transition(self, saga_id: str, carry: Carry) -> bool:
        """One step forwards (or backwards), or the record of its failure."""
        try:
            return bool(await self._send(Advance(saga_id=saga_id, carry=carry), carry))
        except StepFailed as failed:
            fail = Fail(saga_id=saga_id, version=failed.version, error=failed.error, carry=carry)
            return bool(await self._send(fail, carry))

    async def fire_due(self, limit: int = 100, *, stop: asyncio.Event | None = None) -> int:
        """Claim due timeouts and handle each in its own transaction; how many were claimed.

        Once ``stop`` is set the claimed timeouts left are put back (rescheduled).
        """
        claimed = await self._claim(limit)
        for saga_id, step, version in claimed:
            if stop is not None and stop.is_set():
                await self._reschedule(saga_id)
                continue
            try:
                if await self._send(FireTimeout(saga_id=saga_id, step=step, version=version)):
                    await self.drive(saga_id)
            except Exception:  # one failing saga never blocks the others
                log.exception("timeout of saga %s at step %d failed", saga_id, step)
                await self._reschedule(saga_id)
        return len(claimed)

    async def _reschedule(self, saga_id: str) -> None:
        """Look at a saga again later (its claimed timeout is gone), unless it waits or ended."""
        try:
            async with self.transaction() as store:
                state = await store.get(saga_id)
                if state is None or state.status.final:
                    return
                saga = self._saga(state)
                if not waiting(saga, state):  # a waiting step has its own timeout row
                    await schedule(store, state, saga.backoff.delay(state.attempts + 1))
        except Exception:  # the database is away: recovery at the next start resumes it
            log.exception("rescheduling saga %s failed", saga_id)

    async def recover(
        self, *, older_than: float = 0.0, limit: int = 1000, stop: asyncio.Event | None = None
    ) -> int:
        """Resume (or time out) unfinished sagas last changed ``older_than`` seconds ago.

        Once ``stop`` is set no further saga is resumed (the next recovery does).
        """
        before = now() - dt.timedelta(seconds=older_than)
        found = await self._unfinished(before, limit)
        for saga_id, step, version, overdue in found:
            if stop is not None and stop.is_set():
                break
            try:
                if overdue and not await self._send(
                    FireTimeout(saga_id=saga_id, step=step, version=version)
                ):
                    continue
                await self.drive(saga_id)
            except Exception:  # one failing saga never blocks the others
                log.exception("recovering saga %s failed", saga_id)
        if found:
            log.info("recovered %d unfinished saga(s)", len(found))
        return len(found)

    # ------------------------------------------------------------ internals

    async def _act(self, saga: Saga[Any], state: SagaState, store: SagaStore, ctx: Context) -> bool:
        index = state.step
        step = saga.steps[index]
        expected = state.version
        data = saga.load(state.data)
        circuit = self._circuit(saga, index)
        refused = None
        try:
            if circuit is None:
                await self._run_action(saga, index, data, state, ctx)
            else:
                refused = await guarded(
                    circuit, lambda: self._run_action(saga, index, data, state, ctx)
                )
        except (SagaConflict, StepFailed):
            raise
        except Exception as exc:
            if database_unreachable(exc):  # not the step's failure: it runs again later
                raise
            raise StepFailed(expected, f"{step.name}: {one_line(exc)}") from exc
        if refused is not None:  # nothing ran: the step waits for its circuit
            more = await wait_for_circuit(saga, state, store, refused, ACTION)
            self._count(state)
            return more
        state.data = saga.dump(data)
        state.status = SagaStatus.RUNNING
        if step.messaging:
            record(state, step.name, ACTION, "started")
            await store.update(state, expected_version=expected)
            if step.timeout is not None:
                await schedule(store, state, step.timeout)
            return False
        record(state, step.name, ACTION, "succeeded")
        forward(saga, state)
        await store.update(state, expected_version=expected)
        self._count(state)
        return not state.status.final

    async def _run_action(
        self, saga: Saga[Any], index: int, data: Any, state: SagaState, ctx: Context
    ) -> None:
        """A step's send (its messages go to the transaction's outbox) or in-process action."""
        step = saga.steps[index]
        if step.send is not None:
            sent = step.send(data)
            if inspect.isawaitable(sent):
                sent = await sent
            for message in sent if isinstance(sent, (list, tuple)) else (sent,):
                ctx.emit(message)
            return
        call = saga.actions[index]
        assert call is not None
        with self._joining(ctx):
            await call(data, self._mediator(), ctx, state)

    async def _compensate(
        self, saga: Saga[Any], state: SagaState, store: SagaStore, ctx: Context
    ) -> bool:
        index = state.step
        step = saga.steps[index]
        call = saga.compensations[index]
        expected = state.version
        data = saga.load(state.data)
        if call is not None:
            circuit = self._circuit(saga, index)
            refused = None
            try:
                with self._joining(ctx):
                    if circuit is None:
                        await call(data, self._mediator(), ctx, state)
                    else:
                        refused = await guarded(
                            circuit, lambda: call(data, self._mediator(), ctx, state)
                        )
            except (SagaConflict, StepFailed):
                raise
            except Exception as exc:
                if database_unreachable(exc):  # not the compensation's failure: again later
                    raise
                raise StepFailed(expected, f"{step.name}: {one_line(exc)}") from exc
            if refused is not None:  # nothing ran: the compensation waits for its circuit
                return await wait_for_circuit(saga, state, store, refused, COMPENSATION)
            record(state, step.name, COMPENSATION, "succeeded")
        state.data = saga.dump(data)
        compensate_from(saga, state, index - 1, state.error)
        await store.update(state, expected_version=expected)
        self._count(state)
        return not state.status.final

    def _circuit(self, saga: Saga[Any], index: int) -> Circuit | None:
        """The circuit guarding step ``index`` (made on first use), or ``None``."""
        spec = saga.breakers[index]
        return None if spec is None else self._mediator().circuits.circuit(*spec)

    def _count(self, state: SagaState) -> None:
        metrics = self.metrics
        if metrics is None or not state.status.final:
            return
        metrics.sagas_finished.labels(state.saga_type, state.status.value).inc()
        if state.status is SagaStatus.FAILED:
            metrics.sagas_failed.labels(state.saga_type).inc()

    def _saga(self, state: SagaState) -> Saga[Any]:
        try:
            return self.sagas[state.saga_type]
        except KeyError:
            raise LifecycleError(
                f"saga type {state.saga_type!r} is not one of this app's"
            ) from None

    async def _send(self, message: Any, carry: Carry | None = None) -> Any:
        mediator = self._mediator()
        for attempt in range(1, self.conflict_tries + 1):
            try:
                return await mediator.send(message)
            except SagaConflict:
                if carry is not None:
                    carry.state = None  # what it carried is stale: the retry reads afresh
                if attempt == self.conflict_tries:
                    raise
                log.debug("saga transition %s conflicted; trying again", type(message).__name__)
            except BaseException:
                if carry is not None:
                    carry.state = None  # the transition did not commit
                raise
        raise AssertionError("unreachable")  # pragma: no cover
