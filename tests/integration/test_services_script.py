"""scripts/services: the local Kafka and PostgreSQL that the integration tests run against.

The Makefile starts the services before the integration tests; when they are not running,
the session fixture below starts them itself (and stops at the end only what it started).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

# Until pyproject's [tool.pytest.ini_options] markers lists "integration", reading the mark
# warns (and filterwarnings = error would make that a collection error).
with warnings.catch_warnings():
    warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
    pytestmark = pytest.mark.integration

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


def test_status_shows_both_services_running(services: dict[str, str]) -> None:
    status = run_services("status")
    assert status.returncode == 0, status.stdout + status.stderr
    lines = {line.split()[0]: line for line in status.stdout.splitlines()}
    assert set(lines) == set(SERVICE_NAMES)
    for name in SERVICE_NAMES:
        assert re.match(rf"{name}\s+running\s+127\.0\.0\.1:\d+ ", lines[name]), lines[name]


def test_env_output_parses_and_evals(services: dict[str, str]) -> None:
    assert set(services) == {"WIREBUS_KAFKA_BOOTSTRAP", "WIREBUS_DATABASE_URL"}
    assert re.fullmatch(r"127\.0\.0\.1:\d+", services["WIREBUS_KAFKA_BOOTSTRAP"])
    assert re.fullmatch(
        r"postgresql\+asyncpg://wirebus:wirebus@127\.0\.0\.1:\d+/wirebus_test",
        services["WIREBUS_DATABASE_URL"],
    )
    shell = subprocess.run(
        [
            "bash",
            "-c",
            f'eval "$({SERVICES} env)" && bash -c '
            "'echo \"$WIREBUS_KAFKA_BOOTSTRAP $WIREBUS_DATABASE_URL\"'",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert shell.stdout.split() == [
        services["WIREBUS_KAFKA_BOOTSTRAP"],
        services["WIREBUS_DATABASE_URL"],
    ]


async def test_kafka_produce_consume_round_trip(services: dict[str, str]) -> None:
    aiokafka = pytest.importorskip("aiokafka")
    bootstrap = services["WIREBUS_KAFKA_BOOTSTRAP"]
    topic = f"wirebus-it-{uuid.uuid4().hex[:12]}"  # fresh; created by the broker on first use
    payload = uuid.uuid4().bytes

    producer = aiokafka.AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, payload, key=b"k")
    finally:
        await producer.stop()

    consumer = aiokafka.AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"wirebus-it-{uuid.uuid4().hex[:12]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), timeout=60)
    finally:
        await consumer.stop()
    assert (record.key, record.value) == (b"k", payload)
    assert (record.partition, record.offset) == (sent.partition, sent.offset)


async def test_postgres_select_one(services: dict[str, str]) -> None:
    asyncpg = pytest.importorskip("asyncpg")
    dsn = services["WIREBUS_DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        assert await conn.fetchval("select 1") == 1
        assert await conn.fetchval("select current_database()") == "wirebus_test"
        assert await conn.fetchval("select current_user") == "wirebus"
    finally:
        await conn.close()


def test_start_again_is_idempotent_quiet_and_quick(services: dict[str, str]) -> None:
    begin = time.monotonic()
    again = run_services("start")
    elapsed = time.monotonic() - begin
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    assert elapsed < 10, f"'start' with everything running took {elapsed:.1f}s"
    assert parse_env(run_services("env").stdout) == services
