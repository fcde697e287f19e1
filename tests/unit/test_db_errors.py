"""``database_unreachable``: which errors mean "the database cannot be reached" (hold and retry).

Each kind a driver or SQLAlchemy raises when the database is away is
unreachable, also when the handler wrapped it in its own error; a
handler's own database error (a constraint, bad data, a statement timeout)
and any plain Python error are not.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3

import asyncpg
import pytest
from sqlalchemy import exc as sa

from wirebus.db_errors import database_unreachable

pg = asyncpg.exceptions


def wrapped(error: BaseException, outer: BaseException) -> BaseException:
    """``outer`` raised from ``error`` (``raise outer from error``)."""
    try:
        try:
            raise error
        except BaseException as inner:
            raise outer from inner
    except BaseException as caught:
        return caught


@pytest.mark.parametrize(
    "error",
    [
        pg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        pg.ConnectionFailureError("connection failure"),
        pg.AdminShutdownError("terminating connection due to administrator command"),
        pg.CrashShutdownError("terminating connection because of crash of another process"),
        pg.CannotConnectNowError("the database system is starting up"),
        pg.TooManyConnectionsError('too many connections for database "orders"'),
        pg.InterfaceError("cannot perform operation: connection is closed"),
        sqlite3.OperationalError("database is locked"),
        sqlite3.OperationalError("unable to open database file"),
        sa.OperationalError(
            "INSERT INTO notes", {}, sqlite3.OperationalError("database is locked")
        ),
        sa.OperationalError("SELECT 1", {}, ConnectionRefusedError(111, "refused")),
        sa.InterfaceError("SELECT 1", {}, Exception("connection is closed")),
        sa.DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True),
        sa.TimeoutError("QueuePool limit of size 5 overflow 10 reached"),
    ],
    ids=lambda e: type(e).__module__.split(".")[0] + "." + type(e).__name__,
)
def test_a_driver_error_of_a_database_away_is_unreachable(error: BaseException) -> None:
    assert database_unreachable(error)


def test_an_unreachable_database_error_the_handler_wrapped_is_still_unreachable() -> None:
    terminated = pg.AdminShutdownError("terminating connection due to administrator command")
    assert database_unreachable(wrapped(terminated, RuntimeError("could not save the order")))
    statement = wrapped(terminated, sa.DBAPIError("INSERT INTO notes", {}, Exception("Error")))
    assert database_unreachable(statement)


@pytest.mark.parametrize(
    "error",
    [
        sa.IntegrityError("INSERT", {}, pg.UniqueViolationError("duplicate key value")),
        sa.DataError("INSERT", {}, pg.NumericValueOutOfRangeError("out of range")),
        sa.ProgrammingError("SELECT", {}, pg.UndefinedTableError('relation "x" does not exist')),
        sa.DBAPIError("SELECT", {}, pg.QueryCanceledError("canceling statement due to timeout")),
        sa.OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: notes")),
        pg.UniqueViolationError("duplicate key value"),
        pg.InterfaceError("cannot perform operation: another operation is in progress"),
        sqlite3.OperationalError("near 'SELEC': syntax error"),
        sa.NoResultFound("No row was found when one was required"),
        ValueError("bad order"),
        KeyError("sku"),
    ],
    ids=lambda e: type(e).__module__.split(".")[0] + "." + type(e).__name__,
)
def test_a_handlers_own_error_is_not_unreachable(error: BaseException) -> None:
    assert not database_unreachable(error)


async def test_a_connection_refused_inside_the_driver_is_unreachable() -> None:
    with socket.socket() as free:  # a port nobody listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with pytest.raises(ConnectionRefusedError) as refused:
        await asyncpg.connect(host="127.0.0.1", port=port, user="u", database="d", timeout=5)
    assert database_unreachable(refused.value)


async def test_a_connection_refused_in_the_handlers_own_code_is_not_the_database() -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with pytest.raises(ConnectionRefusedError) as refused:
        await asyncio.open_connection("127.0.0.1", port)  # e.g. a payment provider
    assert not database_unreachable(refused.value)
    assert not database_unreachable(wrapped(refused.value, RuntimeError("provider down")))


def test_a_cycle_of_causes_ends() -> None:
    first, second = ValueError("a"), ValueError("b")
    first.__context__, second.__context__ = second, first
    assert not database_unreachable(first)
