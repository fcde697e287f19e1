"""``wirebus.testing.postgres_database``: a fresh database per test, dropped by an ordinary role."""

from __future__ import annotations

import asyncpg
import pytest

from wirebus.testing import postgres_database
from wirebus.testing.databases import admin_dsn, drop_database

pytestmark = pytest.mark.integration


async def exists(url: str, name: str) -> bool:
    conn = await asyncpg.connect(admin_dsn(url))
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await conn.close()


async def test_a_fresh_database_is_usable_and_gone_afterwards(database_url: str) -> None:
    async with postgres_database(database_url, prefix="kit") as url:
        name = url.rsplit("/", 1)[1]
        conn = await asyncpg.connect(admin_dsn(url))
        try:
            assert await conn.fetchval("SELECT current_database()") == name
        finally:
            await conn.close()
        assert await exists(database_url, name)
    assert not await exists(database_url, name)


async def test_a_database_with_sessions_still_open_is_dropped(database_url: str) -> None:
    """A test that leaves a connection (or a crashed child process's) does not fail teardown."""
    async with postgres_database(database_url) as url:
        name = url.rsplit("/", 1)[1]
        left_open = [await asyncpg.connect(admin_dsn(url)) for _ in range(3)]
    assert not await exists(database_url, name)
    for conn in left_open:
        assert conn.is_closed() or not await _alive(conn)


async def _alive(conn: asyncpg.Connection) -> bool:
    try:
        await conn.fetchval("SELECT 1")
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        return False
    return True


async def test_dropping_a_database_that_is_not_there_is_a_no_op(database_url: str) -> None:
    await drop_database(database_url, "it_never_created")


async def test_only_plain_names_are_accepted(database_url: str) -> None:
    with pytest.raises(ValueError, match="plain lower-case"):
        await drop_database(database_url, 'x"; DROP DATABASE wirebus; --')
