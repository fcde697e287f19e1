"""The real Kafka broker and PostgreSQL of ``scripts/services``, for integration tests.

The Makefile starts the services before the integration tests; when they are
not running, the session fixture starts them itself (and stops at the end only
what it started, unless ``WIREBUS_KEEP_SERVICES=1``).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "scripts" / "services"
SERVICE_NAMES = ("kafka", "postgres")


def run_services(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SERVICES), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def running_services() -> set[str]:
    status = run_services("status")
    return {
        line.split()[0]
        for line in status.stdout.splitlines()
        if len(line.split()) >= 2 and line.split()[1] == "running"
    }


def parse_env(text: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in text.splitlines():
        match = re.fullmatch(r"export ([A-Z_][A-Z0-9_]*)=(\S+)", line)
        assert match, f"not an 'export NAME=VALUE' line: {line!r}"
        env[match[1]] = match[2]
    return env


@pytest.fixture(scope="session")
def services() -> Iterator[dict[str, str]]:
    """The services' environment (``scripts/services env``), starting them when needed."""
    before = running_services()
    if before != set(SERVICE_NAMES):
        # the first start on a fresh machine downloads the broker jars: allow for that
        started = run_services("start", timeout=900)
        assert started.returncode == 0, f"scripts/services start failed: {started.stderr.strip()}"
    env = run_services("env")
    assert env.returncode == 0, env.stderr
    yield parse_env(env.stdout)
    if os.environ.get("WIREBUS_KEEP_SERVICES") != "1":
        for name in set(SERVICE_NAMES) - before:
            run_services("stop", name, timeout=120)


@pytest.fixture
def bootstrap(services: dict[str, str]) -> str:
    return services["WIREBUS_KAFKA_BOOTSTRAP"]


@pytest.fixture
def database_url(services: dict[str, str]) -> str:
    return services["WIREBUS_DATABASE_URL"]


@pytest.fixture
def fresh() -> str:
    """A fresh name for topics and groups, unique per test."""
    return f"it-{uuid.uuid4().hex[:10]}"


async def read_records(
    bootstrap: str, topic: str, count: int, *, within: float = 60, grace: float = 0.0
) -> list[Any]:
    """``count`` raw records of ``topic`` from the beginning (aiokafka, a fresh group).

    ``grace`` seconds more are read after that, to catch records beyond
    ``count`` (duplicates) when a test must prove there are none.
    """
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"reader-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + within
        while len(records) < count and time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(messages)
        if grace:
            for messages in (await consumer.getmany(timeout_ms=int(grace * 1000))).values():
                records.extend(messages)
    finally:
        await consumer.stop()
    return records


def plain_dsn(url: str, database: str | None = None) -> str:
    """``url`` as a plain ``postgresql://`` DSN (for asyncpg), optionally of another database."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


@pytest.fixture
async def pg_url(database_url: str) -> AsyncIterator[str]:
    """The SQLAlchemy URL of a fresh database, dropped when the test ends."""
    from wirebus.testing import postgres_database

    async with postgres_database(database_url) as url:
        yield url
