"""The unit of work: a pipeline stage that gives each call one transaction with its outbox rows.

The runtime puts :class:`UnitOfWorkStage` innermost in the pipeline when the
app has a database. For each call it opens a :class:`UnitOfWork`; the
handler's ``AsyncSession`` (injected by type) is that unit of work's session.
When the handler returns, the stage asks the event sink which emitted
events travel, and commits them -- encoded once, ``ce_id`` fixed here,
stable across every later publish attempt -- as ``wirebus_outbox`` rows in
the same transaction as the handler's own changes, with the inbox row of the
consumed event being handled, if any. If the handler raises or the commit
fails, none of it persists. A consumed event whose claim carries a
:class:`BatchUnitOfWork` joins that batch instead: the consumer commits
a partition's records together. Events that stay in-process are left to the
sink, to be handed on after the commit.

A value the database refuses (PostgreSQL's data exceptions, SQLSTATE class
22: a string too long for its column, a NUL byte, a number out of range;
SQLite's ``OverflowError`` for an integer over int64), raised by the
handler's own statements or at commit, came from the caller: the stage
raises :class:`~wirebus.errors.DataRejected` (INVALID_ARGUMENT) in its place
and logs one warning line, the database's reason without the SQL.

A streaming handler's unit of work commits each time the handler yields an
item (what it changed and emitted before that item) and once at the end;
if the stream fails or is cancelled, the work since its last item is rolled
back. A stream can last as long as its client likes: one transaction for
its whole life would hold a pooled connection and keep its events from the
relay for as long.

Example (a handler using the session)::

    @router.handler
    async def place_order(cmd: PlaceOrder, session: AsyncSession, ctx: Context) -> OrderRef:
        session.add(OrderRow(...))
        ctx.emit(OrderPlaced(...))       # same transaction as the row above
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

from dishka import Provider, Scope, provide
from sqlalchemy import Table, insert, text
from sqlalchemy.exc import DataError as SqlAlchemyDataError
from sqlalchemy.ext.asyncio import AsyncSession

from ..broker import EventEncoder, now_rfc3339
from ..context import Context, current_context
from ..db import NOTIFY_CHANNEL, Database, outbox_table, utcnow
from ..errors import DataRejected, LifecycleError
from ..inbox import InboxClaim
from ..inbox.sqlalchemy import mark_handled
from ..pipeline import CallNext
from ..sink import EventSink
from ._onestatement import OneStatementWriter
from .batch import BatchUnitOfWork
from .rows import row_from_record

__all__ = [
    "NOTIFY_CHANNEL",
    "BatchUnitOfWork",
    "DatabaseProvider",
    "UnitOfWork",
    "UnitOfWorkStage",
    "joining",
]

log = logging.getLogger(__name__)

# The call whose open unit of work a nested ``mediator.send`` joins (a saga step's).
_joinable: contextvars.ContextVar[Context | None] = contextvars.ContextVar(
    "wirebus_joinable_unit_of_work", default=None
)


@contextlib.contextmanager
def joining(ctx: Context) -> Iterator[None]:
    """Within this block, requests sent through the mediator join ``ctx``'s unit of work.

    Their writes and the events they emit commit (or roll back) with ``ctx``'s
    own, in one transaction: a saga step's handlers and its new state. Without
    a unit of work in ``ctx`` (no database) it changes nothing.

    Example::

        with joining(ctx):
            await mediator.send(ReserveStock(order_id=data.order_id))
    """
    token = _joinable.set(ctx if ctx.unit_of_work is not None else None)
    try:
        yield
    finally:
        _joinable.reset(token)


# Built once: building statements per commit costs more CPU than running them.
_INSERT_OUTBOX = insert(outbox_table)
_NOTIFY = text(f"NOTIFY {NOTIFY_CHANNEL}")


class UnitOfWork:
    """The session of one call and the commit that adds its outbox and inbox rows.

    :meth:`insert` adds a new row to the call's transaction without opening
    a session: on PostgreSQL, a call that only inserts commits its rows and
    its outbox rows as one statement (one round trip, see
    ``wirebus.outbox._onestatement``). Rows inserted so are written at commit
    (before the outbox rows, in order), so a read through :attr:`session`
    in the same call sees them only if the session was opened before them.

    Example (a store on the call's unit of work)::

        class OrderStore:
            def __init__(self, uow: UnitOfWork) -> None:
                self.uow = uow

            async def add(self, order: OrderView) -> None:
                await self.uow.insert(orders, {"order_id": order.order_id, ...})
    """

    def __init__(
        self,
        database: Database,
        encoder: EventEncoder,
        *,
        session: AsyncSession | None = None,
        writer: OneStatementWriter | None = None,
    ) -> None:
        self.database = database
        self.encoder = encoder
        self._session: AsyncSession | None = session
        self._writer = writer
        self._rows: list[tuple[Table, Mapping[str, Any]]] = []

    @property
    def session(self) -> AsyncSession:
        """The call's session, opened on first use."""
        if self._session is None:
            self._session = self.database.session()
        return self._session

    async def insert(self, table: Table, row: Mapping[str, Any]) -> None:
        """Insert ``row`` (column key -> value) into ``table`` in this call's transaction.

        With a session already open (or no one-statement writer: SQLite, a
        consumer's batch) it is executed now; otherwise at commit.
        """
        writer = self._writer
        if self._session is None and writer is not None and writer.one_statement:
            self._rows.append((table, row))
        else:
            await self.session.execute(_insert_of(table, writer), row)

    async def commit(self, outbound: Sequence[Any], inbox: InboxClaim | None = None) -> None:
        """Write ``outbound`` events as outbox rows, and ``inbox``'s row, then commit."""
        if inbox is not None and inbox.written:
            inbox = None
        rows = self._rows
        if not outbound and self._session is None and inbox is None and not rows:
            return  # nothing was touched: no transaction to open
        outbox = self._outbox_rows(outbound)
        writer = self._writer
        if writer is not None and self._one_statement(writer, outbox, inbox):
            groups = writer.groups(rows, len(outbox))
            if groups is not None:
                self._rows = []
                await writer.write(groups, outbox)  # one statement: its own transaction
                return
        session = self.session
        if rows:
            self._rows = []
            for table, row in rows:
                await session.execute(_insert_of(table, writer), row)
        if outbox:
            await session.execute(_INSERT_OUTBOX, outbox[0] if len(outbox) == 1 else outbox)
            database = self.database
            if database.is_postgres and not database.outbox_notifies:
                # No trigger (a schema not yet upgraded): notify the relays here.
                await session.execute(_NOTIFY)
        if inbox is not None:
            dialect = "postgresql" if self.database.is_postgres else "sqlite"
            await mark_handled(session, dialect, inbox.group, [inbox.event_id])
        await session.commit()
        if inbox is not None:
            inbox.written = True

    def _one_statement(
        self, writer: OneStatementWriter, outbox: list[Any], inbox: InboxClaim | None
    ) -> bool:
        """Whether this commit is inserts only, on PostgreSQL (and relays hear of it)."""
        if not writer.one_statement or self._session is not None:
            return False
        return inbox is None and (not outbox or self.database.outbox_notifies)

    def _outbox_rows(self, outbound: Sequence[Any]) -> list[dict[str, Any]]:
        if not outbound:
            return []
        now, time = utcnow(), now_rfc3339()
        record, context = self.encoder.record, self.encoder.context_headers()
        return [row_from_record(record(e, time=time, context=context), now) for e in outbound]

    async def close(self) -> None:
        """Close the session; anything not committed is rolled back."""
        self._rows = []
        if self._session is not None:
            await self._session.close()
            self._session = None


def _insert_of(table: Table, writer: OneStatementWriter | None) -> Any:
    return writer.insert_of(table) if writer is not None else insert(table)


class UnitOfWorkStage:
    """Pipeline stage: one :class:`UnitOfWork` per call, committed when the handler succeeds.

    ``outbox=False`` (a database with no relay behind it) commits state
    only and leaves every event to the sink.
    """

    stage_name = "unit of work"

    def __init__(
        self, database: Database, encoder: EventEncoder, sink: EventSink, *, outbox: bool = True
    ) -> None:
        self.database = database
        self.encoder = encoder
        self.sink = sink
        self.outbox = outbox
        self._writer = OneStatementWriter(database)

    async def __call__(self, message: Any, call_next: CallNext) -> Any:
        ctx = current_context()
        if ctx is None:  # pragma: no cover - the mediator always binds one
            raise LifecycleError("the unit of work runs only inside the mediator's pipeline")
        claim = ctx.inbox
        if claim is not None and claim.batch is not None:
            return await self._in_batch(claim.batch, ctx, message, call_next)
        host = _joinable.get()
        if host is not None and host is not ctx:
            return await self._joined(host, ctx, message, call_next)
        outer = ctx.unit_of_work
        uow = UnitOfWork(self.database, self.encoder, writer=self._writer)
        ctx.unit_of_work = uow
        hook = functools.partial(self._commit, uow, ctx)
        ctx.item_hooks.append(hook)
        try:
            result = await call_next(message)
            await self._commit(uow, ctx)
            return result
        except Exception as exc:
            rejected = data_rejected(exc, message)
            if rejected is None:
                raise
            raise rejected from exc
        finally:
            ctx.item_hooks.remove(hook)
            ctx.unit_of_work = outer
            await uow.close()

    async def _joined(self, host: Context, ctx: Context, message: Any, call_next: CallNext) -> Any:
        """Run inside ``host``'s open unit of work: its events commit with ``host``'s."""
        outer = ctx.unit_of_work
        ctx.unit_of_work = host.unit_of_work
        try:
            result = await call_next(message)
        finally:
            ctx.unit_of_work = outer
        host.events.extend(ctx.take_events())  # delivered (or written) by the host's commit
        return result

    async def _in_batch(
        self, batch: BatchUnitOfWork, ctx: Context, message: Any, call_next: CallNext
    ) -> Any:
        """Join a consumer's batch: its session, and its outbox rows instead of a commit.

        The consumer marks the inbox and commits the batch after its last
        record; if this handler raises, the consumer rolls the batch back.
        """
        outer = ctx.unit_of_work
        ctx.unit_of_work = batch.unit_of_work(self.encoder)
        try:
            result = await call_next(message)
        finally:
            ctx.unit_of_work = outer
        if self.outbox and ctx.events:
            outbound, ctx.events = self.sink.split(ctx.events)
            if outbound:
                now, time = utcnow(), now_rfc3339()
                record, context = self.encoder.record, self.encoder.context_headers()
                batch.add_outbox_rows(
                    row_from_record(record(e, time=time, context=context), now) for e in outbound
                )
        return result

    async def _commit(self, uow: UnitOfWork, ctx: Context) -> None:
        if self.outbox and ctx.events:
            outbound, ctx.events = self.sink.split(ctx.events)
        else:
            outbound = []
        try:
            await uow.commit(outbound, ctx.inbox)
        except Exception as exc:  # a stream's item hook commits here too
            rejected = data_rejected(exc, None)
            if rejected is None:
                raise
            raise rejected from exc


# ---------------------------------------------------------------- a value the database refused

_REASON_CHARS = 200
_DRIVER_DIRS = ("/aiosqlite/", "/sqlite3/", "/asyncpg/", "/sqlalchemy/")


def data_rejected(exc: BaseException, message: object) -> DataRejected | None:
    """:class:`DataRejected` for a database's data error in ``exc`` (or its causes), else None.

    Logs one warning line naming the message type and the database's reason.

    Example::

        try:
            await session.commit()
        except Exception as exc:
            raise (data_rejected(exc, command) or exc) from exc
    """
    if isinstance(exc, DataRejected):
        return None
    driver = _driver_data_error(exc)
    if driver is None:
        return None
    reason = (str(driver).strip().splitlines() or [type(driver).__name__])[0][:_REASON_CHARS]
    what = type(message).__qualname__ if message is not None else "a call"
    log.warning("%s: the database rejected a value: %s: %s", what, type(driver).__name__, reason)
    return DataRejected(f"the database rejected a value of the request: {reason}")


def _driver_data_error(exc: BaseException) -> BaseException | None:
    """The outermost driver exception (not SQLAlchemy's wrapper, which quotes the SQL)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    wrapped: BaseException | None = None
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, SqlAlchemyDataError):
            wrapped = current
        elif _is_data_error(current):
            return current
        current = current.__cause__ or current.__context__
    if wrapped is not None:  # SQLAlchemy's DataError: its driver error is ``orig``
        orig = getattr(wrapped, "orig", None)
        return orig if isinstance(orig, BaseException) else wrapped
    return None


def _is_data_error(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.DataError):
        return True
    if isinstance(exc, OverflowError):  # sqlite3 binding an int over int64
        return _raised_in_driver(exc.__traceback__)
    # asyncpg's DataError (class 22 and its subclasses, or its own encoding
    # check), matched by name: asyncpg is an optional dependency
    return any(
        c.__name__ == "DataError" and c.__module__.startswith("asyncpg") for c in type(exc).__mro__
    )


def _raised_in_driver(tb: TracebackType | None) -> bool:
    """Whether the innermost frame is a database driver's (not the handler's own arithmetic)."""
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = tb.tb_frame.f_code.co_filename.replace("\\", "/")
    return any(part in filename for part in _DRIVER_DIRS)


class DatabaseProvider(Provider):
    """Provides ``Database`` (app), the call's ``UnitOfWork`` and its ``AsyncSession``."""

    def __init__(self, database: Database) -> None:
        super().__init__()
        self._database = database

    @provide(scope=Scope.APP)
    def database(self) -> Database:
        return self._database

    @provide(scope=Scope.REQUEST)
    def unit_of_work(self) -> UnitOfWork:
        ctx = current_context()
        uow = ctx.unit_of_work if ctx is not None else None
        if uow is None:
            raise LifecycleError(
                "no unit of work is open: a handler that takes an AsyncSession runs only"
                " through a mediator built with a database"
            )
        return uow  # type: ignore[no-any-return]

    @provide(scope=Scope.REQUEST)
    def session(self, uow: UnitOfWork) -> AsyncSession:
        return uow.session
