"""Schema migrations (Alembic): ``wirebus db upgrade MODULE:ATTR``.

wirebus's own tables (``wirebus_outbox``, ``wirebus_inbox``) are migrated by
the scripts in this package, versioned in ``wirebus_alembic_version`` so they
never collide with an app's own Alembic history. An app with its own Alembic
scripts names them with ``App(migrations="path/to/alembic")`` and they run
next (version table ``alembic_version``); an app that only declares
``metadata=`` gets its missing tables created.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect

from ..db import Database

__all__ = ["WIREBUS_VERSION_TABLE", "upgrade"]

WIREBUS_VERSION_TABLE = "wirebus_alembic_version"
_HERE = Path(__file__).resolve().parent


def _config(script_location: Path, version_table: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.attributes["version_table"] = version_table
    return config


async def upgrade(url: str, app_metadata: Any = None, app_migrations: str | None = None) -> str:
    """Upgrade wirebus's tables, then the app's; a one-line summary."""
    database = Database(url)
    try:
        async with database.engine.begin() as conn:
            await conn.run_sync(_upgrade, _config(_HERE, WIREBUS_VERSION_TABLE))
            if app_migrations:
                await conn.run_sync(_upgrade, _config(Path(app_migrations), "alembic_version"))
                app = f"app migrations {app_migrations} at head"
            elif app_metadata is not None:
                missing = await conn.run_sync(_missing_tables, app_metadata)
                await conn.run_sync(app_metadata.create_all)
                app = f"app tables created: {', '.join(missing) or 'none missing'}"
            else:
                app = "no app tables"
    finally:
        await database.close()
    return f"wirebus tables at head; {app}"


def _upgrade(connection: Any, config: Config) -> None:
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _missing_tables(connection: Any, metadata: Any) -> list[str]:
    existing = set(inspect(connection).get_table_names())
    return [name for name in metadata.tables if name not in existing]
