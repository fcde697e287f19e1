"""``Database``: the SQLAlchemy async engine behind state, outbox and inbox.

SQLite (``sqlite+aiosqlite://``) is the embedded default; PostgreSQL
(``postgresql+asyncpg://``) is for production. wirebus's own tables
(``wirebus_outbox``, ``wirebus_inbox``, ``wirebus_saga``,
``wirebus_saga_timeout``) live in :data:`metadata`; an app adds
its own tables with ``App(metadata=...)``.

One source of truth for the schema: the tables here are what the code
reads and writes; the Alembic revisions in ``wirebus.migrations`` hold the
frozen DDL that builds them, and a test compares the two. ``schema=`` says
where a database's schema comes from when it starts:

- ``"migrate"``: wirebus's revisions to head, then the app's (its own
  ``migrations=`` scripts, or ``create_all`` of its ``extra_metadata``);
- ``"create"``: ``create_all`` (in-memory or throw-away databases, tests);
- ``"none"``: made elsewhere (``wirebus db upgrade``); start checks it and
  raises :class:`~wirebus.errors.ConfigurationError` when it is missing or
  behind;
- ``"unchecked"`` (the default): start neither makes nor checks it (tools
  that open a database to inspect or migrate it).

One owner starts and closes a database (the runtime); ``start`` is
idempotent and shared by concurrent callers, ``close`` is idempotent and a
closed database cannot be started again.

Example::

    database = Database("sqlite+aiosqlite:///shop.db", schema="migrate")
    await database.start()
    async with database.sessions() as session: ...
    await database.close()
"""

from __future__ import annotations

import asyncio
import datetime as dt
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

from sqlalchemy import (
    DDL,
    JSON,
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
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from .errors import ConfigurationError, LifecycleError

__all__ = [
    "NOTIFY_CHANNEL",
    "WAITING_ROWS",
    "Database",
    "UNFINISHED_SAGAS",
    "SchemaMode",
    "inbox_table",
    "metadata",
    "outbox_table",
    "saga_table",
    "saga_timeout_table",
    "utcnow",
]

SchemaMode = Literal["migrate", "create", "none", "unchecked"]
"""Where a database's schema comes from when it starts (see the module docstring)."""

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


# Sagas (``wirebus.saga.sqlalchemy``): one row per saga instance, and its
# steps' pending timeouts. Declared here, on wirebus's metadata, so that
# every path that makes the schema (create_all, the revisions) has them.

UNFINISHED_SAGAS = text("status <> 'completed' AND status <> 'compensated' AND status <> 'failed'")
"""The sagas the ``wirebus_saga_unfinished`` index holds (a query must say so to use it)."""

saga_table = Table(
    "wirebus_saga",
    metadata,
    Column("saga_id", String(64), primary_key=True),
    Column("saga_type", String(255), nullable=False),
    Column("key", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("step", Integer, nullable=False),
    Column("data", JSON, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("history", JSON, nullable=False),
    Column("error", Text, nullable=False),
    # Two concurrent starts of one saga are one row: the second insert does nothing.
    UniqueConstraint("saga_type", "key", name="wirebus_saga_correlation"),
    # ``wirebus saga list``: newest first, of one status or of all.
    Index("wirebus_saga_status", "status", "created_at"),
    Index("wirebus_saga_created", "created_at"),
    # Recovery looks for sagas left unfinished: only those are in this index,
    # so it stays small however many sagas completed.
    Index(
        "wirebus_saga_unfinished",
        "updated_at",
        postgresql_where=UNFINISHED_SAGAS,
        sqlite_where=UNFINISHED_SAGAS,
    ),
)

saga_timeout_table = Table(
    "wirebus_saga_timeout",
    metadata,
    Column("timeout_id", String(64), primary_key=True),
    Column("saga_id", String(64), nullable=False),
    Column("step", Integer, nullable=False),
    Column("version", Integer, nullable=False),
    Column("due_at", DateTime(timezone=True), nullable=False),
    Index("wirebus_saga_timeout_due", "due_at"),
    Index("wirebus_saga_timeout_saga", "saga_id"),
)


class Database:
    """An async engine and session factory; ``start`` makes or checks the schema.

    Its owner (in an app, the :class:`~wirebus.runtime.Runtime`) starts it
    before handing it to the mediator, relay and consumers, and closes it
    after they stopped; they use it and never close it. ``start`` is
    idempotent (concurrent callers share one start, a failed start may be
    retried); ``close`` is idempotent, and a closed database refuses to start
    again with :class:`~wirebus.errors.LifecycleError`.

    ``create_schema=True`` (the older spelling) means ``schema="migrate"``, or
    ``"create"`` for an in-memory SQLite database.

    Example::

        database = Database("postgresql+asyncpg://app@db/shop", schema="none")
        await database.start()  # ConfigurationError: ... run `wirebus db upgrade ...`
    """

    def __init__(
        self,
        url: str,
        *,
        schema: SchemaMode | None = None,
        create_schema: bool = False,
        extra_metadata: Sequence[MetaData] = (),
        migrations: str | None = None,
        pool_size: int = 10,
    ) -> None:
        try:
            parsed = make_url(url)
        except Exception:
            raise ConfigurationError(f"not a database URL: {url!r}") from None
        backend = parsed.get_backend_name()
        if backend not in ("sqlite", "postgresql"):
            raise ConfigurationError(f"wirebus supports sqlite and postgresql, not {backend}")
        memory = backend == "sqlite" and parsed.database in (None, "", ":memory:")
        if migrations is not None and not Path(migrations).is_dir():
            raise ConfigurationError(f"migrations={migrations!r} is not an Alembic directory")
        self.schema: SchemaMode = _schema_mode(schema, create_schema, memory)
        self._private_dir: tempfile.TemporaryDirectory[str] | None = None
        if memory:
            # One in-memory SQLite connection cannot isolate concurrent
            # transactions (a reader's rollback undid a writer's insert): a
            # private database is a temporary file, removed on close.
            self._private_dir = tempfile.TemporaryDirectory(prefix="wirebus-private-")
            url = parsed.set(database=f"{self._private_dir.name}/private.db").render_as_string(
                hide_password=False
            )
        self.url = url
        self.dialect = backend
        """Where the schema comes from on :meth:`start` (see :data:`SchemaMode`)."""
        self.create_schema = self.schema in ("migrate", "create")
        self.extra_metadata = tuple(extra_metadata)
        self.migrations = migrations
        """The app's own Alembic script directory (run by ``schema="migrate"``)."""
        if backend == "sqlite":
            self.engine: AsyncEngine = create_async_engine(
                url,
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
        self._closed = False
        self._starting: asyncio.Task[None] | None = None

    @classmethod
    def in_memory(cls, *, extra_metadata: Sequence[MetaData] = ()) -> Database:
        """A private, throwaway SQLite database with the schema created (tests, demos).

        A temporary file, removed on :meth:`close` (``:memory:`` URLs get one
        too): a single in-memory connection cannot keep concurrent calls'
        transactions apart.
        """
        return cls("sqlite+aiosqlite:///:memory:", schema="create", extra_metadata=extra_metadata)

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @property
    def started(self) -> bool:
        """Whether :meth:`start` completed (and :meth:`close` was not called since)."""
        return self._started

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called: the database cannot start again."""
        return self._closed

    @property
    def sqlite_path(self) -> str | None:
        """The file of a file-backed SQLite database (``None`` otherwise)."""
        if self.dialect != "sqlite":
            return None
        name = make_url(self.url).database
        return None if name in (None, "", ":memory:") else name

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Make or check the schema as ``schema`` says, once; SQLite files switch to WAL.

        Idempotent and cheap once started; concurrent calls wait for one
        start, and a caller cancelled while waiting does not cancel it.
        """
        if self._started:
            return
        if self._closed:
            raise LifecycleError("this database was closed; build a new Database to reconnect")
        starting = self._starting
        if starting is None:
            starting = self._starting = asyncio.ensure_future(self._start())
            starting.add_done_callback(self._start_ended)
        try:
            await asyncio.shield(starting)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if starting.cancelled() and (current is None or not current.cancelling()):
                # not this caller cancelled: close() ended the start it waited on
                raise LifecycleError("the database was closed while it was starting") from None
            raise

    def _start_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is not None:
            self._starting = None  # not started: a later start() tries again

    async def _start(self) -> None:
        for attempt in range(3):
            try:
                async with self.engine.begin() as conn:
                    await self._prepare(conn)
                break
            except DBAPIError:
                # Another process made the same tables a moment before us
                # (two slices starting together): look again, then they exist.
                if attempt == 2:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))
        self._started = not self._closed

    async def _prepare(self, conn: AsyncConnection) -> None:
        if self.dialect == "sqlite" and "memory" not in self.url:
            await conn.execute(text("PRAGMA journal_mode=WAL"))
        if self.schema == "migrate":
            await self._migrate(conn)
        elif self.schema == "create":
            for meta in (metadata, *self.extra_metadata):
                await conn.run_sync(meta.create_all)
        elif self.schema == "none":
            await self._check(conn)
        if self.dialect == "postgresql":
            self.outbox_notifies = bool(
                (await conn.execute(text(_HAS_NOTIFY_TRIGGER))).scalar_one()
            )

    async def _migrate(self, conn: AsyncConnection) -> None:
        from .migrations import alembic_turn, migrate_connection  # Alembic only when migrating

        async with alembic_turn():  # one upgrade at a time in this process
            if self.dialect == "postgresql":
                # and across processes: released when this transaction ends
                await conn.execute(text(_MIGRATION_LOCK))
            await conn.run_sync(migrate_connection, self.extra_metadata, self.migrations)

    async def _check(self, conn: AsyncConnection) -> None:
        from .migrations import schema_problems

        problems = await conn.run_sync(schema_problems, self.extra_metadata, self.migrations)
        if problems:
            where = make_url(self.url).render_as_string(hide_password=True)
            raise ConfigurationError(
                f"the schema of {where} is not ready: {'; '.join(problems)};"
                " run `wirebus db upgrade MODULE:ATTR` (or start with schema='migrate')"
            )

    async def close(self) -> None:
        """Dispose of the connection pool; idempotent, and the database cannot start again."""
        if self._closed:
            return
        self._closed = True
        self._started = False
        starting, self._starting = self._starting, None
        if starting is not None and not starting.done():
            starting.cancel()
            await asyncio.wait([starting])
        await self.engine.dispose()
        if self._private_dir is not None:
            self._private_dir.cleanup()

    # ------------------------------------------------------------ use

    def session(self) -> AsyncSession:
        """A new session (not yet in a transaction)."""
        return self.sessions()

    def asyncpg_dsn(self) -> str:
        """The URL as a plain ``postgresql://`` DSN for a raw asyncpg connection."""
        url = make_url(self.url).set(drivername="postgresql")
        return url.render_as_string(hide_password=False)


def _schema_mode(schema: SchemaMode | None, create_schema: bool, memory: bool) -> SchemaMode:
    if schema is None:
        if not create_schema:
            return "unchecked"
        return "create" if memory else "migrate"
    if schema not in get_args(SchemaMode):
        choices = ", ".join(repr(mode) for mode in get_args(SchemaMode))
        raise ConfigurationError(f"schema must be one of {choices}, not {schema!r}")
    if create_schema:
        raise ConfigurationError("pass schema=... or create_schema=True, not both")
    return schema


_MIGRATION_LOCK = "SELECT pg_advisory_xact_lock(2003399283, 1835624306)"  # "wirs", "migr"


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
