"""Schema migrations (Alembic): ``wirebus db upgrade MODULE:ATTR``.

wirebus's own tables (``wirebus_outbox``, ``wirebus_inbox``) are migrated by
the scripts in this package, versioned in ``wirebus_alembic_version`` so they
never collide with an app's own Alembic history. An app with its own Alembic
scripts names them with ``App(migrations="path/to/alembic")`` and they run
next (version table ``alembic_version``); an app that only declares
``metadata=`` gets its missing tables created.

The scripts hold frozen DDL: they never import the live tables of
``wirebus.db``, so changing a table there needs a new revision (a test
compares the migrated schema with the tables).

Example::

    summary = await upgrade("sqlite+aiosqlite:///shop.db", app.metadata, app.migrations)
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, inspect

from ..db import Database

__all__ = [
    "WIREBUS_VERSION_TABLE",
    "alembic_turn",
    "head_revision",
    "migrate_connection",
    "schema_problems",
    "upgrade",
]

WIREBUS_VERSION_TABLE = "wirebus_alembic_version"
APP_VERSION_TABLE = "alembic_version"
_HERE = Path(__file__).resolve().parent
_WIREBUS_TABLES = ("wirebus_outbox", "wirebus_inbox")

# Alembic runs revisions through module-level proxies (``alembic.op``,
# ``alembic.context``): two upgrades interleaving in one process (two
# databases starting on one event loop) would clobber each other's, so they
# take turns. This guards Alembic's process-wide state, hence process-wide.
_ONE_UPGRADE_AT_A_TIME = threading.Lock()


@contextlib.asynccontextmanager
async def alembic_turn() -> AsyncIterator[None]:
    """Wait until no other upgrade runs in this process (any thread or loop).

    Example::

        async with alembic_turn():
            await conn.run_sync(migrate_connection)
    """
    # A poll, not an asyncio.Event: the holder may run on another loop or
    # thread; contention is rare (starters racing) and short.
    while not _ONE_UPGRADE_AT_A_TIME.acquire(blocking=False):  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    try:
        yield
    finally:
        _ONE_UPGRADE_AT_A_TIME.release()


def _config(script_location: Path, version_table: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.attributes["version_table"] = version_table
    return config


async def upgrade(url: str, app_metadata: Any = None, app_migrations: str | None = None) -> str:
    """Upgrade wirebus's tables, then the app's; a one-line summary.

    Example::

        await upgrade("postgresql+asyncpg://app@db/shop", app.metadata)
        # 'wirebus tables at head; app tables created: orders'
    """
    metas = () if app_metadata is None else (app_metadata,)
    database = Database(url)
    try:
        async with alembic_turn(), database.engine.begin() as conn:
            return await conn.run_sync(migrate_connection, metas, app_migrations)
    finally:
        await database.close()


def migrate_connection(
    connection: Any, app_metadata: Sequence[MetaData] = (), app_migrations: str | None = None
) -> str:
    """On a sync connection in a transaction: wirebus's revisions to head, then the app's.

    The app's own Alembic scripts run when given; otherwise its missing
    tables are created from ``app_metadata``. Returns a one-line summary.
    ``Database(schema="migrate")`` runs this on start (``conn.run_sync``,
    inside :func:`alembic_turn`).
    """
    _upgrade(connection, _config(_HERE, WIREBUS_VERSION_TABLE))
    if app_migrations:
        _upgrade(connection, _config(Path(app_migrations), APP_VERSION_TABLE))
        return f"wirebus tables at head; app migrations {app_migrations} at head"
    if not app_metadata:
        return "wirebus tables at head; no app tables"
    missing: list[str] = []
    for meta in app_metadata:
        missing += _missing_tables(connection, meta)
        meta.create_all(connection)
    return f"wirebus tables at head; app tables created: {', '.join(missing) or 'none missing'}"


def schema_problems(
    connection: Any, app_metadata: Sequence[MetaData] = (), app_migrations: str | None = None
) -> list[str]:
    """What keeps an existing schema from being used as it is (empty: ready).

    Missing wirebus or app tables, and wirebus's (or the app's) revision
    behind its head. ``Database(schema="none")`` checks this on start.
    """
    problems: list[str] = []
    existing = set(inspect(connection).get_table_names())
    missing = [name for name in _WIREBUS_TABLES if name not in existing]
    if missing:
        problems.append(f"missing tables {', '.join(missing)}")
    else:
        problems += _behind(connection, _HERE, WIREBUS_VERSION_TABLE, "wirebus tables")
    for meta in app_metadata:
        absent = [name for name in meta.tables if name not in existing]
        if absent:
            problems.append(f"missing app tables {', '.join(absent)}")
    if app_migrations:
        problems += _behind(connection, Path(app_migrations), APP_VERSION_TABLE, "app tables")
    return problems


def head_revision(script_location: Path = _HERE) -> str | None:
    """The head revision of a script directory (wirebus's own by default)."""
    script = ScriptDirectory.from_config(_config(script_location, WIREBUS_VERSION_TABLE))
    return script.get_current_head()


def _behind(connection: Any, scripts: Path, version_table: str, what: str) -> list[str]:
    context = MigrationContext.configure(connection, opts={"version_table": version_table})
    current, head = context.get_current_revision(), head_revision(scripts)
    if current == head:
        return []
    found = "not under migration" if current is None else f"at revision {current}"
    return [f"{what} {found}, head is {head}"]


def _upgrade(connection: Any, config: Config) -> None:
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _missing_tables(connection: Any, metadata: Any) -> list[str]:
    existing = set(inspect(connection).get_table_names())
    return [name for name in metadata.tables if name not in existing]
