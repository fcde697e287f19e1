"""``UnitOfWork``: one request's transaction, with its outbox rows.

The request scope provides the handler's ``AsyncSession`` from its unit of
work. When the handler returns, the mediator commits the unit of work: the
emitted events that travel (registered with the app) are encoded once --
``ce_id`` fixed here, stable across every later publish attempt -- and
inserted into ``wirebus_outbox`` in the same transaction as the handler's own
changes. If the handler raises or the commit fails, neither persists.

A consumer may also claim an inbox row for the event it is handling; it is
written in the same transaction, so a redelivery after a crash is either
fully handled or not at all.

Example (a handler using the session)::

    @router.handler
    async def place_order(cmd: PlaceOrder, session: AsyncSession, ctx: Context) -> OrderRef:
        session.add(OrderRow(...))
        ctx.emit(OrderPlaced(...))       # same transaction as the row above
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from dishka import Provider, Scope, provide
from sqlalchemy import insert, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from ..broker import EventEncoder, now_rfc3339
from ..db import NOTIFY_CHANNEL, Database, inbox_table, outbox_table, utcnow
from ..inbox import inbox_claim
from .rows import row_from_record

__all__ = ["NOTIFY_CHANNEL", "DatabaseProvider", "UnitOfWork"]

# Built once: building statements per commit costs more CPU than running them.
_INSERT_OUTBOX = insert(outbox_table)
_NOTIFY = text(f"NOTIFY {NOTIFY_CHANNEL}")


class UnitOfWork:
    """The session of one request and the commit that adds its outbox rows."""

    def __init__(self, database: Database, encoder: EventEncoder, *, outbox: bool = True) -> None:
        self.database = database
        self.encoder = encoder
        self.outbox = outbox
        self._session: AsyncSession | None = None

    @property
    def session(self) -> AsyncSession:
        """The request's session, opened on first use."""
        if self._session is None:
            self._session = self.database.session()
        return self._session

    async def commit(self, events: Sequence[Any]) -> list[Any]:
        """Write travelling events as outbox rows and commit; return the in-process rest."""
        by_type = self.encoder.registry.by_type
        if self.outbox:
            outbound = [e for e in events if by_type(type(e)) is not None]
            local = [e for e in events if by_type(type(e)) is None]
        else:  # no relay behind this database: events stay in-process, after the commit
            outbound, local = [], list(events)
        claim = inbox_claim.get()
        if not outbound and self._session is None and claim is None:
            return local
        session = self.session
        if outbound:
            now, time = utcnow(), now_rfc3339()
            rows = [row_from_record(self.encoder.record(e, time=time), now) for e in outbound]
            await session.execute(_INSERT_OUTBOX, rows[0] if len(rows) == 1 else rows)
            database = self.database
            if database.is_postgres and not database.outbox_notifies:
                # No trigger (a schema not yet upgraded): notify the relays here.
                await session.execute(_NOTIFY)
        if claim is not None and not claim.written:
            dialect_insert = pg_insert if self.database.is_postgres else sqlite_insert
            await session.execute(
                dialect_insert(inbox_table)
                .values(consumer_group=claim.group, event_id=claim.event_id, handled_at=utcnow())
                .on_conflict_do_nothing()
            )
        await session.commit()
        if claim is not None:
            claim.written = True
        return local

    async def close(self) -> None:
        """Close the session; anything not committed is rolled back."""
        if self._session is not None:
            await self._session.close()
            self._session = None


class DatabaseProvider(Provider):
    """Provides ``Database`` (app), ``UnitOfWork`` and ``AsyncSession`` (request)."""

    def __init__(self, database: Database, encoder: EventEncoder, *, outbox: bool = True) -> None:
        super().__init__()
        self._database = database
        self._encoder = encoder
        self._outbox = outbox

    @provide(scope=Scope.APP)
    def database(self) -> Database:
        return self._database

    @provide(scope=Scope.REQUEST)
    async def unit_of_work(self, database: Database) -> AsyncIterator[UnitOfWork]:
        await database.start()  # idempotent: a mediator used without start() still works
        uow = UnitOfWork(database, self._encoder, outbox=self._outbox)
        try:
            yield uow
        finally:
            await uow.close()

    @provide(scope=Scope.REQUEST)
    def session(self, uow: UnitOfWork) -> AsyncSession:
        return uow.session
