"""PostgreSQL: a call's new rows and its outbox rows as one statement, one round trip.

A command that only inserts (the shop's PlaceOrder: an order row and an
``OrderPlaced`` outbox row) needs no interactive transaction: a single
statement is atomic on its own. Through a session it costs four round trips
(BEGIN, two INSERTs, COMMIT) and SQLAlchemy's ORM execution path for each;
here it is one ``INSERT`` with the other inserts as data-modifying CTEs::

    WITH w0 AS (INSERT INTO shop_orders (...) VALUES ($1, ...))
    INSERT INTO wirebus_outbox (...) VALUES ($7, ...)

run on the pooled connection's asyncpg driver (its prepared-statement cache
makes it one Bind/Execute after the first). Every insert commits or none
does; the outbox's statement trigger notifies the relays as for any insert,
and each row's id comes from its sequence as before, so the relay's order is
unchanged. The SQL of each shape (tables, columns, number of outbox rows) is
built once and kept, up to ``max_shapes`` shapes.

Example (what :class:`~wirebus.outbox.uow.UnitOfWork` does at commit)::

    writer = OneStatementWriter(database)
    await writer.write([(orders, {"order_id": "o1", ...})], [outbox_row])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, insert
from sqlalchemy.sql.dml import Insert
from sqlalchemy.util import greenlet_spawn

from ..db import outbox_table

if TYPE_CHECKING:
    from ..db import Database

__all__ = ["OUTBOX_COLUMNS", "OneStatementWriter"]

OUTBOX_COLUMNS = (
    "event_id",
    "topic",
    "key",
    "value",
    "headers",
    "shard",
    "status",
    "attempts",
    "created_at",
    "available_at",
)
"""The outbox columns a unit of work writes (the keys of ``row_from_record``)."""

_Shape = tuple[tuple[tuple[Table, tuple[str, ...]], ...], int]


class OneStatementWriter:
    """Writes inserted rows and outbox rows of one call in one statement (PostgreSQL).

    Also keeps each table's ``insert(table)`` (built once) for the session path.
    """

    def __init__(self, database: Database, *, max_shapes: int = 256) -> None:
        self.database = database
        self.max_shapes = max_shapes
        self.one_statement = database.is_postgres
        """Whether :meth:`write` may be used (PostgreSQL); else only :meth:`insert_of`."""
        self._sql: dict[_Shape, str] = {}
        self._inserts: dict[Table, Insert] = {}
        self._quote = database.engine.dialect.identifier_preparer

    def insert_of(self, table: Table) -> Insert:
        """``insert(table)``, built once (for a session's ``execute``)."""
        statement = self._inserts.get(table)
        if statement is None:
            statement = self._inserts[table] = insert(table)
        return statement

    async def write(
        self, rows: Sequence[tuple[Table, Mapping[str, Any]]], outbox: Sequence[Mapping[str, Any]]
    ) -> None:
        """Insert ``rows`` (in order) and then the ``outbox`` rows, atomically."""
        shape: _Shape = (tuple((table, tuple(row)) for table, row in rows), len(outbox))
        sql = self._sql.get(shape)
        if sql is None:
            sql = self._build(shape)
            if len(self._sql) < self.max_shapes:
                self._sql[shape] = sql
        args: list[Any] = []
        for _, row in rows:
            args.extend(row.values())
        for row in outbox:
            args.extend([row[c] for c in OUTBOX_COLUMNS])
        pooled = await self.database.engine.raw_connection()
        try:
            await pooled.driver_connection.execute(sql, *args)  # type: ignore[union-attr]
        finally:
            await greenlet_spawn(pooled.close)

    def _build(self, shape: _Shape) -> str:
        tables, outbox_rows = shape
        inserts: list[tuple[Table, tuple[str, ...], int]] = [(t, c, 1) for t, c in tables]
        if outbox_rows:
            inserts.append((outbox_table, OUTBOX_COLUMNS, outbox_rows))
        parts: list[str] = []
        n = 0
        for table, columns, count in inserts:
            values = []
            for _ in range(count):
                values.append("(" + ", ".join(f"${n + i + 1}" for i in range(len(columns))) + ")")
                n += len(columns)
            names = ", ".join(self._quote.quote(table.c[c].name) for c in columns)
            target = self._quote.format_table(table)
            parts.append(f"INSERT INTO {target} ({names}) VALUES {', '.join(values)}")
        *ctes, last = parts
        if not ctes:
            return last
        return "WITH " + ", ".join(f"w{i} AS ({sql})" for i, sql in enumerate(ctes)) + " " + last
