"""One source of truth: the migrated schema is exactly the tables in ``wirebus.db``.

Each test runs wirebus's revisions on a fresh SQLite file and on a fresh
PostgreSQL database and compares what they built with the tables of
``wirebus.db.metadata`` (outbox, inbox, saga and saga timeout): columns,
types, nullability and server defaults (Alembic's ``compare_metadata``),
indexes with their partial-index predicates, and on PostgreSQL the trigger
that notifies the relays. Changing a table in
``db.py`` without a new revision (or a revision without the table) fails here.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Index, MetaData, Text, inspect, text
from sqlalchemy.engine import make_url

from wirebus.db import NOTIFY_CHANNEL, Database, inbox_table, metadata, outbox_table, utcnow
from wirebus.migrations import WIREBUS_VERSION_TABLE, upgrade
from wirebus.testing import wait_until
from wirebus.testing.databases import create_database, drop_database

pytestmark = pytest.mark.integration

Fresh = Callable[[], Awaitable[str]]


def plain_dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", "postgresql"])
async def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Fresh]:
    """Makes URLs of fresh, empty databases of one kind (PostgreSQL ones dropped at the end)."""
    made: list[str] = []
    base = request.getfixturevalue("database_url") if request.param == "postgresql" else ""

    async def make() -> str:
        name = f"it_{uuid.uuid4().hex[:12]}"
        made.append(name)
        if request.param == "sqlite":
            return f"sqlite+aiosqlite:///{tmp_path}/{name}.db"
        return await create_database(base, name)

    yield make
    if request.param == "postgresql":
        for name in made:
            await drop_database(base, name)


async def on(url: str, inspect_sync: Callable[[Any], Any]) -> Any:
    """``inspect_sync(connection)`` on the database at ``url``."""
    database = Database(url)
    try:
        async with database.engine.connect() as conn:
            return await conn.run_sync(inspect_sync)
    finally:
        await database.close()


def _predicate(where: Any) -> str | None:
    """An index predicate without the casts and parentheses PostgreSQL adds."""
    if where is None:
        return None
    return " ".join(re.sub(r"::[a-z]+(?: varying)?|[()]", "", str(where)).split())


def _declared_indexes(table: Any, dialect: str) -> dict[str, Any]:
    return {
        index.name: (
            [c.name for c in index.columns],
            bool(index.unique),
            _predicate(index.dialect_options[dialect]["where"]),
        )
        for index in table.indexes
    }


def _reflected_indexes(inspector: Any, name: str, dialect: str) -> dict[str, Any]:
    return {
        index["name"]: (
            index["column_names"],
            bool(index["unique"]),
            _predicate(index.get("dialect_options", {}).get(f"{dialect}_where")),
        )
        for index in inspector.get_indexes(name)
        if not index.get("duplicates_constraint")  # a UNIQUE constraint's own index
    }


def differences(declared: MetaData) -> Callable[[Any], list[str]]:
    """What the database lacks or has beyond ``declared``'s tables (empty: the same)."""

    def compare(connection: Any) -> list[str]:
        context = MigrationContext.configure(
            connection,
            opts={
                "version_table": WIREBUS_VERSION_TABLE,
                "compare_type": True,
                "compare_server_default": True,
            },
        )
        found = [repr(diff) for diff in compare_metadata(context, declared)]
        inspector, dialect = inspect(connection), connection.dialect.name
        for table in declared.tables.values():
            reflected = _reflected_indexes(inspector, table.name, dialect)
            expected = _declared_indexes(table, dialect)
            if reflected != expected:
                found.append(f"indexes of {table.name}: built {reflected}, declared {expected}")
        return found

    return compare


_WIREBUS_TABLES = ("wirebus_outbox", "wirebus_inbox", "wirebus_saga", "wirebus_saga_timeout")


def full_shape(connection: Any) -> dict[str, Any]:
    """Everything reflection tells of wirebus's tables, as exact as the server says it."""
    inspector = inspect(connection)
    shape: dict[str, Any] = {}
    for name in _WIREBUS_TABLES:
        shape[name] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"], c.get("default"))
                for c in inspector.get_columns(name)
            ],
            "primary key": inspector.get_pk_constraint(name)["constrained_columns"],
            "unique": sorted(u["column_names"] for u in inspector.get_unique_constraints(name)),
            "indexes": sorted(
                (i["name"], i["column_names"], _options(i)) for i in inspector.get_indexes(name)
            ),
        }
    if connection.dialect.name == "postgresql":
        shape["triggers"] = connection.execute(text(_TRIGGERS)).all()
    return shape


def _options(index: Any) -> list[tuple[str, str]]:
    return sorted((k, str(v)) for k, v in index.get("dialect_options", {}).items())


_TRIGGERS = (
    "SELECT t.tgname, pg_get_triggerdef(t.oid), p.prosrc FROM pg_trigger t"
    " JOIN pg_proc p ON p.oid = t.tgfoid"
    " WHERE t.tgrelid = 'wirebus_outbox'::regclass AND NOT t.tgisinternal ORDER BY t.tgname"
)


async def test_the_migrated_schema_has_no_difference_from_the_tables(fresh: Fresh) -> None:
    url = await fresh()
    await upgrade(url)
    assert await on(url, differences(metadata)) == []


async def test_the_migrated_schema_is_the_one_create_all_builds(fresh: Fresh) -> None:
    """Down to the server's own rendering of defaults, predicates and the trigger."""
    migrated, created = await fresh(), await fresh()
    await upgrade(migrated)
    database = Database(created, schema="create")
    try:
        await database.start()
    finally:
        await database.close()
    assert await on(migrated, full_shape) == await on(created, full_shape)


async def test_a_database_the_first_0001_made_is_upgraded_to_the_tables(fresh: Fresh) -> None:
    """0001 was edited after it first shipped (claim index, no key or pending index)."""
    url = await fresh()
    await upgrade(url)
    database = Database(url)
    try:
        async with database.engine.begin() as conn:  # as commit 4e409a3's 0001 left it
            await conn.execute(text("DROP INDEX wirebus_outbox_pending"))
            await conn.execute(text("DROP INDEX wirebus_outbox_key"))
            await conn.execute(
                text("CREATE INDEX wirebus_outbox_claim ON wirebus_outbox (status, shard, id)")
            )
            await conn.execute(text(f"UPDATE {WIREBUS_VERSION_TABLE} SET version_num = '0001'"))
    finally:
        await database.close()
    assert await on(url, differences(metadata)) != []

    await upgrade(url)

    assert await on(url, differences(metadata)) == []


async def test_a_table_changed_without_a_revision_is_a_difference(fresh: Fresh) -> None:
    """The comparison sees a new column and a changed partial-index predicate."""
    url = await fresh()
    await upgrade(url)
    changed = MetaData()
    outbox = outbox_table.to_metadata(changed)
    inbox_table.to_metadata(changed)
    outbox.append_column(Column("trace", Text, nullable=True))
    waiting = next(i for i in outbox.indexes if i.name == "wirebus_outbox_waiting")
    outbox.indexes.remove(waiting)
    Index(
        "wirebus_outbox_waiting",
        outbox.c.available_at,
        postgresql_where=text("status = 'pending'"),
        sqlite_where=text("status = 'pending'"),
    )

    found = await on(url, differences(changed))

    assert any("add_column" in diff and "trace" in diff for diff in found), found
    assert any("wirebus_outbox_waiting" in diff for diff in found), found


async def test_a_migrated_postgres_outbox_notifies_the_relays_channel(fresh: Fresh) -> None:
    url = await fresh()
    if not url.startswith("postgresql"):
        pytest.skip("SQLite's relay is woken in its own process: no trigger")
    await upgrade(url)
    heard: list[str] = []
    listener = await asyncpg.connect(plain_dsn(url))
    database = Database(url, schema="none")
    try:
        await listener.add_listener(NOTIFY_CHANNEL, lambda *args: heard.append(args[2]))
        await database.start()
        assert database.outbox_notifies
        async with database.engine.begin() as conn:
            await conn.execute(outbox_table.insert().values(**_row()))
        await wait_until(lambda: heard, within=10, message="no NOTIFY on the relays' channel")
    finally:
        await database.close()
        await asyncio.wait_for(listener.close(), 5)
    assert heard == [NOTIFY_CHANNEL]


def _row() -> dict[str, Any]:
    now = utcnow()
    return {
        "event_id": str(uuid.uuid4()),
        "topic": "t",
        "value": b"v",
        "headers": "",
        "shard": 0,
        "created_at": now,
        "available_at": now,
    }
