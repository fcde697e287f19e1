"""Fresh PostgreSQL databases for tests, created and dropped by a role without superuser rights.

Example::

    async with postgres_database("postgresql+asyncpg://wirebus:wirebus@127.0.0.1/wirebus") as url:
        async with Database(url, schema="migrate") as database:
            ...

Dropping is where a plain ``DROP DATABASE ... WITH (FORCE)`` goes wrong for an
ordinary role: PostgreSQL refuses to terminate an autovacuum worker that happens
to be on the database ("must be a member of the role whose process is being
terminated"), and the teardown fails after a test that wrote enough rows. Here
the role's own sessions are terminated, then a plain ``DROP DATABASE`` runs,
which PostgreSQL lets cancel autovacuum itself; a session that is still going
away is waited for, bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def admin_dsn(url: str) -> str:
    """``url`` (any SQLAlchemy PostgreSQL URL) as a plain ``postgresql://`` DSN for asyncpg."""
    return _url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def create_database(url: str, name: str) -> str:
    """Creates database ``name`` on the server of ``url``; returns that database's URL."""
    import asyncpg

    _check(name)
    conn = await asyncpg.connect(admin_dsn(url))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return _url(url).set(database=name).render_as_string(hide_password=False)


async def drop_database(url: str, name: str, *, within: float = 30.0) -> None:
    """Drops database ``name`` (if it exists) after ending the sessions of this role on it."""
    import asyncpg

    _check(name)
    conn = await asyncpg.connect(admin_dsn(url))
    try:
        deadline = time.monotonic() + within
        while True:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND usename = current_user AND pid <> pg_backend_pid()",
                name,
            )
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
                return
            except asyncpg.ObjectInUseError:
                # a terminated session not gone yet, or one that connected meanwhile
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def postgres_database(url: str, prefix: str = "it") -> AsyncIterator[str]:
    """A new, empty database on the server of ``url``, dropped on exit; yields its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    created = await create_database(url, name)
    try:
        yield created
    finally:
        await drop_database(url, name)


def _url(url: str) -> URL:
    from sqlalchemy.engine import make_url

    return make_url(url)


def _check(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise ValueError(f"not a plain lower-case database name: {name!r}")
