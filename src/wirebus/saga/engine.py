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

Example::

    engine = app.saga_engine(mediator)
    await engine.fire_due()        # what the runtime's poller does
    await engine.recover()         # what the runtime does at start-up
"""

from __future__ import annotations

import datetime as dt
import inspect
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..context import Context, current_context
from ..errors import ConfigurationError, LifecycleError
from .definition import Saga
from .state import SagaConflict, SagaState, SagaStatus, SagaTimeout, StepRecord
from .store import SagaStore
from .transitions import (
    Advance,
    ClaimDue,
    Due,
    Fail,
    FindSaga,
    FireTimeout,
    GetSaga,
    ListSagas,
    RetrySaga,
    Unfinished,
)

if TYPE_CHECKING:
    from ..mediator import Mediator
    from ..metrics import Metrics

__all__ = ["SagaEngine", "Sagas", "StepFailed"]

log = logging.getLogger(__name__)

_ACTION, _COMPENSATION = "action", "compensation"


class StepFailed(Exception):
    """An action or compensation raised: its transaction rolled back; the failure comes next."""

    def __init__(self, version: int, error: str) -> None:
        super().__init__(error)
        self.version = version
        self.error = error


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def waiting(saga: Saga[Any], state: SagaState) -> bool:
    """Whether the saga sent its current step's message and waits for a reply."""
    if state.status is not SagaStatus.RUNNING or state.step >= len(saga.steps):
        return False
    step = saga.steps[state.step]
    if not step.messaging or not state.history:
        return False
    last = state.history[-1]
    return (last.step, last.phase, last.outcome) == (step.name, _ACTION, "started")


class SagaEngine:
    """Runs the sagas of one mediator; transitions take the call's :class:`Context`.

    ``stores(ctx)`` is the saga store of a call's unit of work (the
    SQLAlchemy store on its session, or one in-memory store).
    """

    def __init__(
        self,
        sagas: Sequence[Saga[Any]],
        *,
        stores: Callable[[Context], SagaStore],
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
        ctx.emit(Due(saga_id=state.saga_id))  # driven once this commits
        return state

    async def advance(self, saga_id: str, ctx: Context) -> bool:
        """Run the current action or compensation; ``True`` if the next can run at once."""
        store = self.stores(ctx)
        state = await store.get(saga_id)
        if state is None or state.status.final:
            return False
        saga = self._saga(state)
        if state.status is SagaStatus.COMPENSATING:
            return await self._compensate(saga, state, store, ctx)
        if waiting(saga, state):
            return False
        return await self._act(saga, state, store, ctx)

    async def fail(self, saga_id: str, version: int, error: str, ctx: Context) -> bool:
        """Record a failed action (compensate) or compensation (retry later, or FAILED)."""
        store = self.stores(ctx)
        state = await store.get(saga_id)
        if state is None or state.version != version or state.status.final:
            return False  # another worker moved it meanwhile: it drives it
        saga = self._saga(state)
        expected = state.version
        step = saga.steps[state.step]
        if state.status is not SagaStatus.COMPENSATING:
            self._record(state, step.name, _ACTION, "failed", error)
            self._compensate_from(saga, state, state.step - 1, error)
            await store.update(state, expected_version=expected)
            self._count(state)
            return not state.status.final
        state.attempts += 1
        if state.attempts >= saga.compensation_attempts:
            self._record(state, step.name, _COMPENSATION, "failed", error)
            state.status = SagaStatus.FAILED
            state.error = f"compensating {step.name!r} failed {state.attempts} times: {error}"
            await store.update(state, expected_version=expected)
            self._count(state)
            log.error("saga %s %s failed: %s", saga.name, state.key, state.error)
            return False
        self._record(state, step.name, _COMPENSATION, "retrying", error)
        await store.update(state, expected_version=expected)
        delay = saga.backoff.delay(state.attempts)
        await self._schedule(store, state, delay)
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
            self._record(state, step.name, _ACTION, "succeeded", kind)
            self._forward(saga, state)
        else:
            self._record(state, step.name, _ACTION, "failed", kind)
            self._compensate_from(saga, state, state.step - 1, f"{step.name}: {kind}")
        await store.update(state, expected_version=expected)
        self._count(state)
        if not state.status.final:
            ctx.emit(Due(saga_id=state.saga_id))

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
        self._record(state, name, _ACTION, "timed out")
        self._compensate_from(saga, state, step - 1, f"{name}: no reply in time")
        await store.update(state, expected_version=expected)
        self._count(state)
        return not state.status.final

    async def claim(self, limit: int, ctx: Context) -> list[tuple[str, int, int]]:
        """Claim due timeouts (removed when this transaction commits)."""
        due = await self.stores(ctx).claim_due(_now(), limit=limit)
        return [(t.saga_id, t.step, t.version) for t in due]

    async def unfinished(
        self, updated_before: dt.datetime, limit: int, ctx: Context
    ) -> list[tuple[str, int, int, bool]]:
        """Sagas to resume: not final, and not waiting on a wait that is still live."""
        now = _now()
        found: list[tuple[str, int, int, bool]] = []
        for state in await self.stores(ctx).unfinished(updated_before=updated_before, limit=limit):
            saga = self.sagas.get(state.saga_type)
            if saga is None:
                continue  # a saga type this app does not run
            overdue = False
            if waiting(saga, state):
                timeout = saga.steps[state.step].timeout
                if timeout is None or state.updated_at + dt.timedelta(seconds=timeout) > now:
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
        self._record(state, saga.steps[state.step].name, _COMPENSATION, "retrying", "operator")
        state.status = SagaStatus.COMPENSATING
        state.attempts = 0
        await store.update(state, expected_version=expected)
        ctx.emit(Due(saga_id=state.saga_id))
        return True

    # ------------------------------------------------------------ reading (own transactions)

    async def get(self, saga_id: str) -> SagaState | None:
        """The saga with this id."""
        found: SagaState | None = await self._send(GetSaga(saga_id=saga_id))
        return found

    async def find(self, saga: Saga[Any] | str, key: str) -> SagaState | None:
        """The saga of this type correlated by ``key``."""
        name = saga if isinstance(saga, str) else saga.name
        found: SagaState | None = await self._send(FindSaga(saga_type=name, key=key))
        return found

    async def list(
        self,
        *,
        status: SagaStatus | None = None,
        saga_type: str | None = None,
        limit: int = 100,
    ) -> list[SagaState]:
        """Sagas, newest first (``status=SagaStatus.FAILED``: what needs an operator)."""
        found: list[SagaState] = await self._send(
            ListSagas(status=status, saga_type=saga_type, limit=limit)
        )
        return found

    async def retry(self, saga_id: str) -> bool:
        """``wirebus saga retry``: a FAILED saga compensates again (``False``: it is not failed)."""
        return bool(await self._send(RetrySaga(saga_id=saga_id)))

    # ------------------------------------------------------------ drivers

    async def drive(self, saga_id: str) -> None:
        """Run transitions of one saga until it waits, finishes or schedules a retry."""
        for _ in range(4 * max(len(s.steps) for s in self.sagas.values()) + 8):
            try:
                more = await self._send(Advance(saga_id=saga_id))
            except StepFailed as failed:
                more = await self._send(
                    Fail(saga_id=saga_id, version=failed.version, error=failed.error)
                )
            if not more:
                return

    async def fire_due(self, limit: int = 100) -> int:
        """Claim due timeouts and handle each in its own transaction; how many were claimed."""
        claimed: list[tuple[str, int, int]] = await self._send(ClaimDue(limit=limit))
        for saga_id, step, version in claimed:
            try:
                if await self._send(FireTimeout(saga_id=saga_id, step=step, version=version)):
                    await self.drive(saga_id)
            except Exception:  # one failing saga never blocks the others
                log.exception("timeout of saga %s at step %d failed", saga_id, step)
        return len(claimed)

    async def recover(self, *, older_than: float = 0.0, limit: int = 1000) -> int:
        """Resume (or time out) unfinished sagas last changed ``older_than`` seconds ago."""
        before = _now() - dt.timedelta(seconds=older_than)
        found: list[tuple[str, int, int, bool]] = await self._send(
            Unfinished(updated_before=before, limit=limit)
        )
        for saga_id, step, version, overdue in found:
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
        try:
            if step.send is not None:
                sent = step.send(data)
                if inspect.isawaitable(sent):
                    sent = await sent
                for message in sent if isinstance(sent, (list, tuple)) else (sent,):
                    ctx.emit(message)
            else:
                call = saga.actions[index]
                assert call is not None
                with self._joining(ctx):
                    await call(data, self._mediator(), ctx, state)
        except (SagaConflict, StepFailed):
            raise
        except Exception as exc:
            raise StepFailed(expected, f"{step.name}: {_one_line(exc)}") from exc
        state.data = saga.dump(data)
        state.status = SagaStatus.RUNNING
        if step.messaging:
            self._record(state, step.name, _ACTION, "started")
            await store.update(state, expected_version=expected)
            if step.timeout is not None:
                await self._schedule(store, state, step.timeout)
            return False
        self._record(state, step.name, _ACTION, "succeeded")
        self._forward(saga, state)
        await store.update(state, expected_version=expected)
        self._count(state)
        return not state.status.final

    async def _compensate(
        self, saga: Saga[Any], state: SagaState, store: SagaStore, ctx: Context
    ) -> bool:
        index = state.step
        step = saga.steps[index]
        call = saga.compensations[index]
        expected = state.version
        data = saga.load(state.data)
        if call is not None:
            try:
                with self._joining(ctx):
                    await call(data, self._mediator(), ctx, state)
            except (SagaConflict, StepFailed):
                raise
            except Exception as exc:
                raise StepFailed(expected, f"{step.name}: {_one_line(exc)}") from exc
            self._record(state, step.name, _COMPENSATION, "succeeded")
        state.data = saga.dump(data)
        self._compensate_from(saga, state, index - 1, state.error)
        await store.update(state, expected_version=expected)
        self._count(state)
        return not state.status.final

    @staticmethod
    def _forward(saga: Saga[Any], state: SagaState) -> None:
        state.step += 1
        state.attempts = 0
        state.status = SagaStatus.COMPLETED if state.step >= len(saga.steps) else SagaStatus.RUNNING

    @staticmethod
    def _compensate_from(saga: Saga[Any], state: SagaState, index: int, error: str) -> None:
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

    @staticmethod
    def _record(state: SagaState, step: str, phase: str, outcome: str, detail: str = "") -> None:
        at = _now()
        state.history.append(
            StepRecord(step=step, phase=phase, outcome=outcome, at=at, detail=detail)
        )
        state.updated_at = at

    @staticmethod
    async def _schedule(store: SagaStore, state: SagaState, seconds: float) -> None:
        due = SagaTimeout(
            timeout_id=str(uuid.uuid4()),
            saga_id=state.saga_id,
            step=state.step,
            version=state.version,
            due_at=_now() + dt.timedelta(seconds=seconds),
        )
        await store.add_timeout(due)

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

    async def _send(self, message: Any) -> Any:
        mediator = self._mediator()
        for attempt in range(1, self.conflict_tries + 1):
            try:
                return await mediator.send(message)
            except SagaConflict:
                if attempt == self.conflict_tries:
                    raise
                log.debug("saga transition %s conflicted; trying again", type(message).__name__)
        raise AssertionError("unreachable")  # pragma: no cover


class Sagas:
    """Injectable: start a saga from a handler, in that handler's transaction.

    Example::

        @router.handler
        async def place_order(cmd: PlaceOrder, sagas: Sagas, ctx: Context) -> OrderRef:
            ...
            await sagas.start(checkout, Checkout(order_id=order_id, total_cents=total))
    """

    def __init__(self, engine: SagaEngine) -> None:
        self.engine = engine

    async def start(self, saga: Saga[Any], data: Any, *, key: str | None = None) -> str | None:
        """Start ``saga`` with ``data``; its id, or ``None`` if one with this key exists."""
        if saga.name not in self.engine.sagas:
            raise ConfigurationError(f"saga {saga.name!r} is not in App(sagas=[...])")
        ctx = current_context()
        if ctx is None:
            raise LifecycleError("Sagas.start runs only inside a handler")
        state = await self.engine.start(saga, ctx, data=data, key=key)
        return None if state is None else state.saga_id
