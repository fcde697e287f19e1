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
unchanged. The inserts of one statement run in no defined order, so each
table's rows are one multi-row insert (ids taken in order); rows of one table
with different columns are not written this way. The SQL of each shape
(tables, columns, number of outbox rows) is built once and kept, up to
``max_shapes`` shapes.

Example (what :class:`~wirebus.outbox.uow.UnitOfWork` does at commit)::

    writer = OneStatementWriter(database)
    groups = writer.groups([(orders, {"order_id": "o1", ...})])
    if groups is not None:
        await writer.write(groups, [outbox_row])
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

_MAX_PARAMETERS = 32767
_Group = tuple[Table, tuple[str, ...], list[Mapping[str, Any]]]
_Shape = tuple[tuple[tuple[Table, tuple[str, ...], int], ...], int]


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
        self._plain: dict[Table, bool] = {}
        self._quote = database.engine.dialect.identifier_preparer

    def insert_of(self, table: Table) -> Insert:
        """``insert(table)``, built once (for a session's ``execute``)."""
        statement = self._inserts.get(table)
        if statement is None:
            statement = self._inserts[table] = insert(table)
        return statement

    def groups(
        self, rows: Sequence[tuple[Table, Mapping[str, Any]]], outbox_rows: int = 0
    ) -> list[_Group] | None:
        """``rows`` as one multi-row insert per table, in order; ``None`` if it cannot be one.

        The inserts of one statement run in no defined order, so rows of one
        table must be one insert (its rows take their ids in order): a table
        whose rows name different columns cannot be written so, nor more
        values than a statement may have (PostgreSQL: 32,767 parameters).
        """
        count = outbox_rows * len(OUTBOX_COLUMNS) + sum(len(row) for _, row in rows)
        if count > _MAX_PARAMETERS:
            return None
        groups: dict[Table, _Group] = {}
        for table, row in rows:
            if not self.plain(table):
                return None
            group = groups.get(table)
            if group is None:
                groups[table] = (table, tuple(row), [row])
            elif len(row) == len(group[1]) and all(c in row for c in group[1]):
                group[2].append(row)
            else:
                return None
        return list(groups.values())

    def plain(self, table: Table) -> bool:
        """Whether ``table``'s rows may bypass SQLAlchemy (decided once per table).

        The statement sends the row's values to the driver as they are, so a
        column with a Python-side ``default``/``onupdate`` or a type that
        converts values before binding (a TypeDecorator, Enum, JSON, ...)
        must go through the session, which applies them.
        """
        known = self._plain.get(table)
        if known is None:
            dialect = self.database.engine.dialect
            known = all(
                column.default is None
                and column.onupdate is None
                and column.type.dialect_impl(dialect).bind_processor(dialect) is None
                for column in table.columns
            )
            self._plain[table] = known
        return known

    async def write(self, groups: Sequence[_Group], outbox: Sequence[Mapping[str, Any]]) -> None:
        """Insert each group's rows and then the ``outbox`` rows, atomically."""
        shape: _Shape = (tuple((t, c, len(r)) for t, c, r in groups), len(outbox))
        sql = self._sql.get(shape)
        if sql is None:
            sql = self._build(shape)
            if len(self._sql) < self.max_shapes:
                self._sql[shape] = sql
        args: list[Any] = []
        for _, columns, group_rows in groups:
            for row in group_rows:
                args.extend([row[c] for c in columns])
        for row in outbox:
            args.extend([row[c] for c in OUTBOX_COLUMNS])
        pooled = await self.database.engine.raw_connection()
        try:
            await pooled.driver_connection.execute(sql, *args)  # type: ignore[union-attr]
        finally:
            await greenlet_spawn(pooled.close)

    def _build(self, shape: _Shape) -> str:
        tables, outbox_rows = shape
        inserts = list(tables)
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
