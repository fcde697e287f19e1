"""``Database``: where the schema comes from on start, and one explicit lifecycle."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, event, inspect, text

from wirebus.db import Database
from wirebus.errors import ConfigurationError, LifecycleError
from wirebus.migrations import WIREBUS_VERSION_TABLE, head_revision, upgrade

app_metadata = MetaData()
Table("app_widgets", app_metadata, Column("id", Integer, primary_key=True))


def url_of(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def tables_and_version(path: Path) -> tuple[set[str], str | None]:
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            names = set(inspect(conn).get_table_names())
            version = None
            if WIREBUS_VERSION_TABLE in names:
                query = text(f"SELECT version_num FROM {WIREBUS_VERSION_TABLE}")
                version = conn.execute(query).scalar_one()
    finally:
        engine.dispose()
    return names, version


async def started(database: Database) -> Database:
    try:
        await database.start()
    finally:
        await database.close()
    return database


def count_transactions(database: Database) -> list[Any]:
    """Every transaction the database's engine begins, from now on."""
    begun: list[Any] = []
    event.listen(database.engine.sync_engine, "begin", begun.append)
    return begun


# ---------------------------------------------------------------- schema modes


async def test_create_schema_true_migrates_a_file_database_to_head(tmp_path: Path) -> None:
    """The runtime's ``create_schema=True``: the tables come from the migrations."""
    path = tmp_path / "runtime.db"
    database = await started(
        Database(url_of(path), create_schema=True, extra_metadata=[app_metadata])
    )
    assert database.schema == "migrate"
    names, version = tables_and_version(path)
    assert {"wirebus_outbox", "wirebus_inbox", "app_widgets"} <= names
    assert version == head_revision()


async def test_create_schema_true_creates_an_in_memory_database_without_migrations() -> None:
    database = Database("sqlite+aiosqlite:///:memory:", create_schema=True)
    assert database.schema == "create"
    try:
        await database.start()
        async with database.engine.connect() as conn:
            names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    finally:
        await database.close()
    assert names == {"wirebus_outbox", "wirebus_inbox", "wirebus_saga", "wirebus_saga_timeout"}


async def test_migrate_on_a_database_at_head_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "again.db"
    await upgrade(url_of(path), app_metadata)
    before = tables_and_version(path)
    await started(Database(url_of(path), schema="migrate", extra_metadata=[app_metadata]))
    assert tables_and_version(path) == before


async def test_migrate_adopts_tables_an_older_runtime_created(tmp_path: Path) -> None:
    path = tmp_path / "older.db"
    await started(Database(url_of(path), schema="create"))
    assert tables_and_version(path)[1] is None
    await started(Database(url_of(path), schema="migrate"))
    assert tables_and_version(path)[1] == head_revision()


async def test_starts_racing_to_migrate_one_fresh_file_all_succeed(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    databases = [Database(url_of(path), schema="migrate") for _ in range(3)]
    try:
        await asyncio.gather(*(database.start() for database in databases))
    finally:
        for database in databases:
            await database.close()
    assert tables_and_version(path)[1] == head_revision()


async def test_migrate_runs_the_apps_own_alembic_scripts(tmp_path: Path) -> None:
    scripts = app_scripts(tmp_path / "alembic")
    path = tmp_path / "app.db"
    await started(Database(url_of(path), schema="migrate", migrations=str(scripts)))
    names, version = tables_and_version(path)
    assert {"wirebus_outbox", "app_notes", "alembic_version"} <= names
    assert version == head_revision()  # wirebus's history apart from the app's


async def test_schema_none_refuses_missing_tables_naming_wirebus_db_upgrade(
    tmp_path: Path,
) -> None:
    database = Database(url_of(tmp_path / "empty.db"), schema="none")
    with pytest.raises(ConfigurationError, match=r"missing tables wirebus_outbox.*wirebus db up"):
        await started(database)


async def test_schema_none_refuses_tables_not_under_migration(tmp_path: Path) -> None:
    path = tmp_path / "created.db"
    await started(Database(url_of(path), schema="create"))
    with pytest.raises(ConfigurationError, match="not under migration"):
        await started(Database(url_of(path), schema="none"))


async def test_schema_none_refuses_a_schema_behind_head(tmp_path: Path) -> None:
    path = tmp_path / "behind.db"
    await upgrade(url_of(path))
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {WIREBUS_VERSION_TABLE} SET version_num = '0002'"))
    engine.dispose()
    with pytest.raises(ConfigurationError, match=r"at revision 0002, head is 0005.*db upgrade"):
        await started(Database(url_of(path), schema="none"))


async def test_schema_none_refuses_missing_app_tables(tmp_path: Path) -> None:
    path = tmp_path / "no_app.db"
    await upgrade(url_of(path))
    database = Database(url_of(path), schema="none", extra_metadata=[app_metadata])
    with pytest.raises(ConfigurationError, match="missing app tables app_widgets"):
        await started(database)


async def test_schema_none_starts_on_an_upgraded_database(tmp_path: Path) -> None:
    path = tmp_path / "upgraded.db"
    await upgrade(url_of(path), app_metadata)
    before = tables_and_version(path)
    database = Database(url_of(path), schema="none", extra_metadata=[app_metadata])
    try:
        await database.start()
        assert database.started
    finally:
        await database.close()
    assert tables_and_version(path) == before


async def test_the_default_neither_makes_nor_checks_the_schema(tmp_path: Path) -> None:
    """Tools that open a database to inspect or upgrade it: nothing is made."""
    path = tmp_path / "tool.db"
    database = await started(Database(url_of(path)))
    assert database.schema == "unchecked"
    assert tables_and_version(path) == (set(), None)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"schema": "create_all"}, "schema must be one of"),
        ({"schema": "none", "create_schema": True}, "not both"),
        ({"migrations": "/nonexistent/alembic"}, "not an Alembic directory"),
    ],
)
def test_schema_options_are_checked_at_construction(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Database("sqlite+aiosqlite:///:memory:", **options)


# ---------------------------------------------------------------- lifecycle


async def test_a_second_start_does_nothing(tmp_path: Path) -> None:
    database = Database(url_of(tmp_path / "twice.db"), schema="migrate")
    begun = count_transactions(database)
    try:
        await database.start()
        once = len(begun)
        await database.start()
        assert len(begun) == once
    finally:
        await database.close()


async def test_concurrent_starts_share_one_start(tmp_path: Path) -> None:
    database = Database(url_of(tmp_path / "shared.db"), schema="migrate")
    begun = count_transactions(database)
    try:
        await asyncio.gather(*(database.start() for _ in range(5)))
    finally:
        await database.close()
    assert len(begun) == 1


async def test_a_caller_cancelled_while_waiting_does_not_cancel_the_start(tmp_path: Path) -> None:
    database = Database(url_of(tmp_path / "cancel.db"), schema="migrate")
    try:
        first = asyncio.create_task(database.start())
        second = asyncio.create_task(database.start())
        await asyncio.sleep(0)  # both are waiting on the one start
        first.cancel()
        await second
        assert database.started
        with pytest.raises(asyncio.CancelledError):
            await first
    finally:
        await database.close()


async def test_a_failed_start_can_be_retried(tmp_path: Path) -> None:
    path = tmp_path / "retry.db"
    database = Database(url_of(path), schema="none")
    try:
        with pytest.raises(ConfigurationError):
            await database.start()
        assert not database.started
        await upgrade(url_of(path))
        await database.start()
        assert database.started
    finally:
        await database.close()


async def test_a_closed_database_refuses_to_start_again() -> None:
    database = Database.in_memory()
    await database.start()
    await database.close()
    await database.close()  # idempotent
    assert database.closed
    assert not database.started
    with pytest.raises(LifecycleError, match="closed"):
        await database.start()


async def test_a_database_closed_before_it_started_refuses_to_start() -> None:
    database = Database.in_memory()
    await database.close()
    with pytest.raises(LifecycleError):
        await database.start()


async def test_closing_while_starting_fails_the_waiting_start(tmp_path: Path) -> None:
    database = Database(url_of(tmp_path / "closing.db"), schema="migrate")
    starting = asyncio.create_task(database.start())
    await asyncio.sleep(0)  # the start is under way
    await database.close()
    with pytest.raises(LifecycleError, match="closed while it was starting"):
        await starting
    assert not database.started


# ---------------------------------------------------------------- an app's scripts

_ENV = """
from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, version_table="alembic_version")
with context.begin_transaction():
    context.run_migrations()
"""

_REVISION = """
import sqlalchemy as sa
from alembic import op

revision = "a1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("app_notes", sa.Column("id", sa.Integer, primary_key=True))


def downgrade():
    op.drop_table("app_notes")
"""


def app_scripts(where: Path) -> Path:
    """An app's Alembic directory with one revision creating ``app_notes``."""
    (where / "versions").mkdir(parents=True)
    (where / "env.py").write_text(_ENV)
    (where / "versions" / "a1_notes.py").write_text(_REVISION)
    return where
