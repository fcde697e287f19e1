"""How an app runs its sagas: generated handlers, the engine's dependencies and its store.

``App(sagas=[...])`` includes the routers built here:

- one router per saga, named after it: an event handler per ``start_on``
  type (starts the saga) and one per reply type of its messaging steps
  (advances the saga waiting for it). They are ordinary event handlers, so
  a consumer runs them with its inbox and unit of work: the saga's new
  state commits with the inbox row of the reply;
- one router ``wirebus.saga`` with the engine's transitions (requests, see
  ``wirebus.saga.transitions``) and the in-process ``Due`` handler that
  drives a saga once the transaction that made it movable committed.

Example::

    routers = saga_routers([checkout])
    engine = build_engine([checkout], database=None, mediator=lambda: mediator)
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from dishka import Provider, Scope, provide

from ..context import Context
from ..router import Router
from .definition import Saga
from .engine import SagaEngine
from .memory import MemorySagaStore
from .starter import Sagas
from .store import SagaStore
from .transitions import Advance, Due, Fail, FireTimeout, RetrySaga

if TYPE_CHECKING:
    from ..db import Database
    from ..mediator import Mediator

__all__ = ["INTERNAL_ROUTER", "SagaProvider", "build_engine", "saga_routers"]

INTERNAL_ROUTER = "wirebus.saga"


class SagaProvider(Provider):
    """Provides the mediator's :class:`SagaEngine` and the :class:`Sagas` starter (app scope)."""

    def __init__(self, engine: SagaEngine) -> None:
        super().__init__()
        self._engine = engine
        self._sagas = Sagas(engine)

    @provide(scope=Scope.APP)
    def engine(self) -> SagaEngine:
        return self._engine

    @provide(scope=Scope.APP)
    def sagas(self) -> Sagas:
        return self._sagas


def build_engine(
    sagas: Sequence[Saga[Any]], *, database: Database | None, mediator: Callable[[], Mediator]
) -> SagaEngine:
    """The engine of one mediator: the SQL store on each call's session, or one in memory."""
    stores: Callable[[Context], SagaStore]
    own: Callable[[], contextlib.AbstractAsyncContextManager[SagaStore]]
    if database is not None:
        from .sqlalchemy import SqlSagaStore

        def stores(ctx: Context) -> SagaStore:
            return SqlSagaStore.of(ctx.unit_of_work)

        @contextlib.asynccontextmanager
        async def own() -> AsyncIterator[SagaStore]:
            async with database.session() as session, session.begin():
                yield SqlSagaStore(session, postgres=database.is_postgres)

    else:
        memory = MemorySagaStore()

        def stores(ctx: Context) -> SagaStore:
            return memory

        @contextlib.asynccontextmanager
        async def own() -> AsyncIterator[SagaStore]:
            yield memory

    return SagaEngine(sagas, stores=stores, transaction=own, mediator=mediator)


def saga_routers(sagas: Sequence[Saga[Any]]) -> list[Router]:
    """The routers of ``sagas``: one per saga, and the engine's own."""
    routers = [_internal_router()]
    for saga in sagas:
        router = Router(saga.name)
        for tp in saga.start_on:
            _register(router, tp, f"{saga.name}.start_on_{tp.__name__}", _starter(saga))
        for tp in saga.waiting_for:
            _register(router, tp, f"{saga.name}.reply_{tp.__name__}", _replier(saga))
        routers.append(router)
    return routers


_Handler = Callable[[Any, SagaEngine, Context], Awaitable[Any]]


def _starter(saga: Saga[Any]) -> _Handler:
    async def start(event: Any, engine: SagaEngine, ctx: Context) -> None:
        await engine.start(saga, ctx, data=saga.data_from(event), key=saga.key_from(event))

    return start


def _replier(saga: Saga[Any]) -> _Handler:
    async def reply(event: Any, engine: SagaEngine, ctx: Context) -> None:
        await engine.reply(saga, event, ctx)

    return reply


def _register(router: Router, message: type, name: str, fn: _Handler, returns: Any = None) -> None:
    """Register ``fn`` as the handler of ``message`` (an event handler unless it returns)."""
    first = next(iter(inspect.signature(fn).parameters))
    fn.__annotations__ = {first: message, "engine": SagaEngine, "ctx": Context, "return": returns}
    fn.__module__ = "wirebus.saga"
    fn.__qualname__ = fn.__name__ = name
    router.handler(event=returns is None)(fn)


def _internal_router() -> Router:
    router = Router(INTERNAL_ROUTER)

    async def advance(m: Advance, engine: SagaEngine, ctx: Context) -> bool:
        return await engine.advance(m.saga_id, ctx, m.carry)

    async def fail(m: Fail, engine: SagaEngine, ctx: Context) -> bool:
        return await engine.fail(m.saga_id, m.version, m.error, ctx, m.carry)

    async def fire(m: FireTimeout, engine: SagaEngine, ctx: Context) -> bool:
        return await engine.fire(m.saga_id, m.step, m.version, ctx)

    async def retry(m: RetrySaga, engine: SagaEngine, ctx: Context) -> bool:
        return await engine.reopen(m.saga_id, ctx)

    async def due(m: Due, engine: SagaEngine, ctx: Context) -> None:
        if m.context is None:
            await engine.drive(m.saga_id, m.state)
        else:  # in the context it was emitted in: the trace of what moved the saga
            drive = engine.drive(m.saga_id, m.state)
            await asyncio.create_task(drive, context=m.context.copy())

    for message, fn, returns in (
        (Advance, advance, bool),
        (Fail, fail, bool),
        (FireTimeout, fire, bool),
        (RetrySaga, retry, bool),
    ):
        _register(router, message, f"transition_{message.__name__}", fn, returns)
    _register(router, Due, "drive", due)
    return router
