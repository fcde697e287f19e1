"""``Database``: the SQLAlchemy async engine behind state, outbox and inbox.

SQLite (``sqlite+aiosqlite://``) is the embedded default; PostgreSQL
(``postgresql+asyncpg://``) is for production. wirebus's own tables
(``wirebus_outbox``, ``wirebus_inbox``) live in :data:`metadata`; an app adds
its own tables with ``App(metadata=...)``.

Example::

    database = Database("sqlite+aiosqlite:///shop.db", create_schema=True)
    await database.start()
    async with database.sessions() as session: ...
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    DDL,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    event,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import StaticPool

from .errors import ConfigurationError

__all__ = ["Database", "inbox_table", "metadata", "outbox_table"]

metadata = MetaData()

WAITING_ROWS = text("status = 'pending' AND last_error IS NOT NULL")
"""The rows the ``wirebus_outbox_waiting`` index holds (a query must say so to use it)."""

_BigId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER keys only

outbox_table = Table(
    "wirebus_outbox",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("event_id", String(255), nullable=False, unique=True),
    Column("topic", String(255), nullable=False),
    Column("key", LargeBinary, nullable=True),
    Column("value", LargeBinary, nullable=False),
    Column("headers", Text, nullable=False),
    Column("shard", Integer, nullable=False),
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("available_at", DateTime(timezone=True), nullable=False),
    Column("published_at", DateTime(timezone=True), nullable=True),
    # The relay walks pending rows in id order and stops after a batch: this
    # partial index makes that a short index scan however large the backlog,
    # with or without planner statistics.
    Index(
        "wirebus_outbox_pending",
        "id",
        postgresql_where=text("status = 'pending'"),
        sqlite_where=text("status = 'pending'"),
    ),
    Index("wirebus_outbox_key", "key", "status"),
    # Rows backing off after a failure (available_at in the future): found
    # without scanning the backlog, so the claim can leave their keys out.
    # Only rows that ever failed (a failure always records last_error) are in
    # it, so it stays small and a new row costs no entry in it.
    Index(
        "wirebus_outbox_waiting",
        "available_at",
        postgresql_where=WAITING_ROWS,
        sqlite_where=WAITING_ROWS,
    ),
)

NOTIFY_CHANNEL = "wirebus_outbox"
"""The PostgreSQL channel relays LISTEN on: a NOTIFY on it means new outbox rows."""

# PostgreSQL: an insert into the outbox notifies the relays from the server
# itself (a statement trigger; notifications are delivered on commit and
# merged within a transaction), so a unit of work needs no NOTIFY round trip.
OUTBOX_NOTIFY_DDL = (
    "CREATE OR REPLACE FUNCTION wirebus_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS"
    f" $$ BEGIN PERFORM pg_notify('{NOTIFY_CHANNEL}', ''); RETURN NULL; END $$",
    "CREATE TRIGGER wirebus_outbox_notify AFTER INSERT ON wirebus_outbox"
    " FOR EACH STATEMENT EXECUTE FUNCTION wirebus_outbox_notify()",
)
for _statement in OUTBOX_NOTIFY_DDL:
    _ddl = DDL(_statement)  # type: ignore[no-untyped-call]
    event.listen(outbox_table, "after_create", _ddl.execute_if(dialect="postgresql"))

inbox_table = Table(
    "wirebus_inbox",
    metadata,
    Column("consumer_group", String(255), primary_key=True),
    Column("event_id", String(255), primary_key=True),
    Column("handled_at", DateTime(timezone=True), nullable=False),
)


class Database:
    """An async engine and session factory; ``start`` creates the schema if asked."""

    def __init__(
        self,
        url: str,
        *,
        create_schema: bool = False,
        extra_metadata: Sequence[MetaData] = (),
        pool_size: int = 10,
    ) -> None:
        try:
            parsed = make_url(url)
        except Exception:
            raise ConfigurationError(f"not a database URL: {url!r}") from None
        backend = parsed.get_backend_name()
        if backend not in ("sqlite", "postgresql"):
            raise ConfigurationError(f"wirebus supports sqlite and postgresql, not {backend}")
        self.url = url
        self.dialect = backend
        self.create_schema = create_schema
        self.extra_metadata = tuple(extra_metadata)
        if backend == "sqlite":
            memory = parsed.database in (None, "", ":memory:")
            self.engine: AsyncEngine = create_async_engine(
                url,
                poolclass=StaticPool if memory else None,
                connect_args={"timeout": 30},
            )
        else:
            # No pool_pre_ping: on asyncpg it costs three round trips per
            # checkout (BEGIN, a ping, ROLLBACK), a third of a small command.
            # A connection the server closed (restart, terminated backend,
            # idle timeout) is known without asking: asyncpg sees the socket
            # close and the checkout below replaces it.
            self.engine = create_async_engine(url, pool_size=pool_size)
            event.listen(self.engine.sync_engine, "checkout", _replace_closed)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.outbox_notifies = False
        """PostgreSQL: inserting outbox rows notifies the relays (the trigger exists)."""
        self._started = False

    @classmethod
    def in_memory(cls, *, extra_metadata: Sequence[MetaData] = ()) -> Database:
        """A private in-memory SQLite database with the schema created (tests, demos)."""
        return cls(
            "sqlite+aiosqlite:///:memory:", create_schema=True, extra_metadata=extra_metadata
        )

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @property
    def sqlite_path(self) -> str | None:
        """The file of a file-backed SQLite database (``None`` otherwise)."""
        if self.dialect != "sqlite":
            return None
        name = make_url(self.url).database
        return None if name in (None, "", ":memory:") else name

    async def start(self) -> None:
        """Create the tables (when ``create_schema``) and enable SQLite's WAL."""
        if self._started:
            return
        self._started = True
        for attempt in range(3):
            try:
                await self._prepare()
                return
            except DBAPIError:
                # Another process created the same tables a moment before us
                # (two slices starting together): look again, then they exist.
                if attempt == 2:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))

    async def _prepare(self) -> None:
        async with self.engine.begin() as conn:
            if self.dialect == "sqlite" and "memory" not in self.url:
                await conn.execute(text("PRAGMA journal_mode=WAL"))
            if self.create_schema:
                for meta in (metadata, *self.extra_metadata):
                    await conn.run_sync(meta.create_all)
            if self.dialect == "postgresql":
                self.outbox_notifies = bool(
                    (await conn.execute(text(_HAS_NOTIFY_TRIGGER))).scalar_one()
                )

    async def close(self) -> None:
        """Dispose of the connection pool (idempotent)."""
        await self.engine.dispose()

    def session(self) -> AsyncSession:
        """A new session (not yet in a transaction)."""
        return self.sessions()

    def asyncpg_dsn(self) -> str:
        """The URL as a plain ``postgresql://`` DSN for a raw asyncpg connection."""
        url = make_url(self.url).set(drivername="postgresql")
        return url.render_as_string(hide_password=False)


def _replace_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Pool checkout: a connection whose server side is gone is replaced, not handed out."""
    driver = getattr(dbapi_connection, "driver_connection", None)
    if driver is not None and driver.is_closed():
        raise DisconnectionError("the database closed this connection")


_HAS_NOTIFY_TRIGGER = (
    "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'wirebus_outbox_notify'"
    " AND tgrelid = to_regclass('wirebus_outbox'))"
)


def utcnow() -> dt.datetime:
    """Timezone-aware now, for rows."""
    return dt.datetime.now(dt.UTC)
