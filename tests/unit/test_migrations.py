"""``wirebus.migrations.upgrade``: wirebus's tables by Alembic, then the app's tables."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, inspect, text

import wirebus.migrations
from wirebus.db import Database
from wirebus.migrations import WIREBUS_VERSION_TABLE, head_revision, upgrade

app_metadata = MetaData()
Table(
    "app_widgets",
    app_metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(50), nullable=False),
)
Table("app_gadgets", app_metadata, Column("id", Integer, primary_key=True))


def url_of(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def schema(path: Path) -> dict[str, Any]:
    """Tables with their columns and indexes, and the wirebus version rows (synchronously)."""
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            inspector = inspect(conn)
            tables = {
                name: (
                    sorted(c["name"] for c in inspector.get_columns(name)),
                    sorted(i["name"] for i in inspector.get_indexes(name)),
                )
                for name in inspector.get_table_names()
            }
            versions = (
                [
                    r[0]
                    for r in conn.execute(text(f"SELECT version_num FROM {WIREBUS_VERSION_TABLE}"))
                ]
                if WIREBUS_VERSION_TABLE in tables
                else None
            )
    finally:
        engine.dispose()
    return {"tables": tables, "versions": versions}


OUTBOX_COLUMNS = sorted(
    [
        "id",
        "event_id",
        "topic",
        "key",
        "value",
        "headers",
        "shard",
        "status",
        "attempts",
        "last_error",
        "created_at",
        "available_at",
        "published_at",
    ]
)


async def test_upgrade_creates_wirebus_and_app_tables_on_a_fresh_file(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    summary = await upgrade(url_of(path), app_metadata)

    found = schema(path)
    assert set(found["tables"]) == {
        "wirebus_outbox",
        "wirebus_inbox",
        "wirebus_saga",
        "wirebus_saga_timeout",
        WIREBUS_VERSION_TABLE,
        "app_widgets",
        "app_gadgets",
    }
    assert "alembic_version" not in found["tables"]  # the app's own history is left alone
    columns, indexes = found["tables"]["wirebus_outbox"]
    assert columns == OUTBOX_COLUMNS
    assert indexes  # the claim index (names: see test_the_migrated_schema_matches_create_all)
    assert found["tables"]["wirebus_inbox"][0] == ["consumer_group", "event_id", "handled_at"]
    assert found["versions"] == [head_revision()]
    assert "app_gadgets" in summary
    assert "app_widgets" in summary


async def test_upgrade_without_app_metadata_creates_only_wirebus_tables(tmp_path: Path) -> None:
    path = tmp_path / "bare.db"
    summary = await upgrade(url_of(path))
    assert set(schema(path)["tables"]) == {
        "wirebus_outbox",
        "wirebus_inbox",
        "wirebus_saga",
        "wirebus_saga_timeout",
        WIREBUS_VERSION_TABLE,
    }
    assert "no app tables" in summary


async def test_running_upgrade_twice_is_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "twice.db"
    await upgrade(url_of(path), app_metadata)
    first = schema(path)
    summary = await upgrade(url_of(path), app_metadata)
    assert schema(path) == first
    assert first["versions"] == [head_revision()]
    assert "none missing" in summary


async def test_upgrade_keeps_existing_rows(tmp_path: Path) -> None:
    path = tmp_path / "rows.db"
    await upgrade(url_of(path), app_metadata)
    database = Database(url_of(path))
    try:
        async with database.engine.begin() as conn:
            await conn.execute(text("INSERT INTO app_widgets (id, name) VALUES (1, 'w')"))
            await conn.execute(
                text(
                    "INSERT INTO wirebus_inbox (consumer_group, event_id, handled_at)"
                    " VALUES ('g', 'e', '2025-01-01 00:00:00')"
                )
            )
        await upgrade(url_of(path), app_metadata)
        async with database.engine.connect() as conn:
            assert (await conn.execute(text("SELECT name FROM app_widgets"))).scalar() == "w"
            assert (await conn.execute(text("SELECT event_id FROM wirebus_inbox"))).scalar() == "e"
    finally:
        await database.close()


async def test_upgrade_adopts_tables_created_by_create_all(tmp_path: Path) -> None:
    path = tmp_path / "adopted.db"
    database = Database(url_of(path), schema="create", extra_metadata=[app_metadata])
    try:
        await database.start()  # as runtimes before migrate-on-start did: no version table
    finally:
        await database.close()
    before = schema(path)
    assert WIREBUS_VERSION_TABLE not in before["tables"]

    summary = await upgrade(url_of(path), app_metadata)

    after = schema(path)
    assert after["versions"] == [head_revision()]
    assert {k: v for k, v in after["tables"].items() if k != WIREBUS_VERSION_TABLE} == before[
        "tables"
    ]
    assert "none missing" in summary
    assert await upgrade(url_of(path), app_metadata) == summary


async def test_the_migrated_schema_matches_create_all(tmp_path: Path) -> None:
    """Alembic's wirebus tables and ``db.metadata`` agree (columns and indexes)."""
    migrated, created = tmp_path / "migrated.db", tmp_path / "created.db"
    await upgrade(url_of(migrated))
    database = Database(url_of(created), schema="create")
    try:
        await database.start()
    finally:
        await database.close()
    ours = {"wirebus_outbox", "wirebus_inbox", "wirebus_saga", "wirebus_saga_timeout"}
    migrated_tables = {k: v for k, v in schema(migrated)["tables"].items() if k in ours}
    created_tables = {k: v for k, v in schema(created)["tables"].items() if k in ours}
    assert migrated_tables == created_tables


async def test_a_database_at_0001_gains_the_waiting_index(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    await upgrade(url_of(path))
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:  # as wirebus 0001 left it
            conn.execute(text("DROP INDEX wirebus_outbox_waiting"))
            conn.execute(text(f"UPDATE {WIREBUS_VERSION_TABLE} SET version_num = '0001'"))
    finally:
        engine.dispose()
    assert "wirebus_outbox_waiting" not in schema(path)["tables"]["wirebus_outbox"][1]

    await upgrade(url_of(path))

    after = schema(path)
    assert "wirebus_outbox_waiting" in after["tables"]["wirebus_outbox"][1]
    assert after["versions"] == [head_revision()]


VERSIONS = Path(wirebus.migrations.__file__).parent / "versions"


def imported_modules(script: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            modules.add("." * node.level + (node.module or ""))
    return modules


@pytest.mark.parametrize("script", sorted(VERSIONS.glob("*.py")), ids=lambda p: p.stem)
def test_a_revision_holds_frozen_ddl_importing_only_alembic_and_sqlalchemy(script: Path) -> None:
    """A revision never reads wirebus's live tables, so changing them cannot change it."""
    assert imported_modules(script) <= {"__future__", "alembic", "sqlalchemy"}


async def test_a_database_the_first_0001_made_gains_todays_indexes(tmp_path: Path) -> None:
    """0001 was edited after it first shipped; revision 0004 repairs what it made then."""
    fresh, old = tmp_path / "fresh.db", tmp_path / "first.db"
    await upgrade(url_of(fresh))
    await upgrade(url_of(old))
    engine = create_engine(f"sqlite:///{old}")
    try:
        with engine.begin() as conn:  # as commit 4e409a3's 0001 left it
            conn.execute(text("DROP INDEX wirebus_outbox_pending"))
            conn.execute(text("DROP INDEX wirebus_outbox_key"))
            conn.execute(
                text("CREATE INDEX wirebus_outbox_claim ON wirebus_outbox (status, shard, id)")
            )
            conn.execute(text(f"UPDATE {WIREBUS_VERSION_TABLE} SET version_num = '0001'"))
    finally:
        engine.dispose()

    await upgrade(url_of(old))

    assert schema(old) == schema(fresh)
    assert "wirebus_outbox_claim" not in schema(old)["tables"]["wirebus_outbox"][1]
