"""Whether an error says "the database is unreachable" rather than "this data is wrong".

A consumer that meets the first kind holds its offset and tries the record
again once the database answers (see ``wirebus.consumer``); the second kind
is the handler's own problem and takes the normal retries, then the DLQ.

Unreachable, anywhere in the error's ``__cause__``/``__context__`` chain:

- SQLAlchemy: a ``DBAPIError`` with ``connection_invalidated``, an
  ``OperationalError`` or ``InterfaceError`` (for SQLite only "database is
  locked", "unable to open database file" and "disk I/O error": "no such
  table" is a bug), the pool's ``TimeoutError``;
- asyncpg: connection errors (SQLSTATE class 08, ``ConnectionDoesNotExistError``),
  ``AdminShutdownError``/``CrashShutdownError`` (a terminated session, a
  restart), ``CannotConnectNowError`` (starting up), ``TooManyConnectionsError``
  (also a connection limit of 0), ``InterfaceError`` about a closed connection;
- sqlite3: ``OperationalError`` "database is locked" (and the two above);
- ``OSError`` (``ConnectionRefusedError``, a connect ``TimeoutError``) raised
  from inside the driver or SQLAlchemy, not from the handler's own code (an
  HTTP call refused is not the database).

Everything else, e.g. ``IntegrityError``, ``DataError``, a statement timeout
(``QueryCanceledError``) or a plain Python exception, is not.

Example::

    try:
        await session.commit()
    except Exception as exc:
        if database_unreachable(exc):
            ...  # hold the offset, wait, try again
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from types import ModuleType, TracebackType

__all__ = ["database_unreachable"]

_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "unable to open database")
_SQLITE_TRANSIENT_IO = "disk i/o error"
_DRIVER_MODULES = ("asyncpg", "sqlalchemy", "aiosqlite", "sqlite3", "psycopg")
_MAX_CHAIN = 32  # a cycle or a freak chain must not loop


def database_unreachable(error: BaseException) -> bool:
    """Whether ``error`` (or an error it was raised from) says the database cannot be reached.

    Example::

        assert database_unreachable(ConnectionDoesNotExistError("connection was closed"))
        assert not database_unreachable(ValueError("bad order"))
    """
    return any(_unreachable(exc, inside_driver) for exc, inside_driver in _chain(error))


def _chain(error: BaseException) -> Iterator[tuple[BaseException, bool]]:
    """``error`` and its causes/contexts, each with whether a database layer is above it."""
    seen: set[int] = set()
    current: BaseException | None = error
    below_driver = False
    while current is not None and id(current) not in seen and len(seen) < _MAX_CHAIN:
        seen.add(id(current))
        yield current, below_driver
        below_driver = below_driver or _is_database_error(current)
        current = current.__cause__ or current.__context__


def _unreachable(exc: BaseException, below_driver: bool) -> bool:
    if isinstance(exc, OSError) and not _is_database_error(exc):
        return below_driver or _raised_in_driver(exc.__traceback__)
    sqlalchemy = sys.modules.get("sqlalchemy.exc")
    if sqlalchemy is not None and isinstance(exc, sqlalchemy.SQLAlchemyError):
        return _sqlalchemy_unreachable(exc, sqlalchemy)
    asyncpg = sys.modules.get("asyncpg.exceptions")
    if asyncpg is not None and isinstance(exc, asyncpg.InterfaceError | asyncpg.PostgresError):
        return _asyncpg_unreachable(exc, asyncpg)
    sqlite3 = sys.modules.get("sqlite3")
    if sqlite3 is not None and isinstance(exc, sqlite3.OperationalError):
        return _sqlite_transient(exc)
    return False


def _sqlalchemy_unreachable(exc: BaseException, sa: ModuleType) -> bool:
    if isinstance(exc, sa.TimeoutError):  # the pool's
        return True
    if not isinstance(exc, sa.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, sa.OperationalError | sa.InterfaceError):
        return False
    sqlite3 = sys.modules.get("sqlite3")
    if sqlite3 is not None and isinstance(exc.orig, sqlite3.Error):
        return _sqlite_transient(exc.orig)
    return True


def _asyncpg_unreachable(exc: BaseException, pg: ModuleType) -> bool:
    gone = (
        pg.PostgresConnectionError,  # class 08, incl. ConnectionDoesNotExistError
        pg.AdminShutdownError,  # pg_terminate_backend, a shutdown
        pg.CrashShutdownError,
        pg.CannotConnectNowError,  # starting up, recovering
        pg.TooManyConnectionsError,  # also CONNECTION LIMIT 0
    )
    if isinstance(exc, gone):
        return True
    if isinstance(exc, pg.InterfaceError):
        return "closed" in str(exc)  # "cannot perform operation: connection is closed"
    return False


def _sqlite_transient(exc: BaseException) -> bool:
    message = str(exc).lower()
    return message.startswith(_SQLITE_TRANSIENT) or _SQLITE_TRANSIENT_IO in message


def _is_database_error(exc: BaseException) -> bool:
    """Whether ``exc`` is an error class of SQLAlchemy or of a database driver."""
    return type(exc).__module__.split(".", 1)[0] in _DRIVER_MODULES


def _raised_in_driver(tb: TracebackType | None) -> bool:
    """Whether ``tb`` passes through the driver or SQLAlchemy (not only the app and asyncio)."""
    while tb is not None:
        if tb.tb_frame.f_globals.get("__name__", "").split(".", 1)[0] in _DRIVER_MODULES:
            return True
        tb = tb.tb_next
    return False
