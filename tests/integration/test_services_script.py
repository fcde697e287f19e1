"""scripts/services: the local Kafka and PostgreSQL that the integration tests run against.

The Makefile starts the services before the integration tests; when they are not running,
the session fixture below starts them itself (and stops at the end only what it started).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
import uuid

import pytest

from tests.integration.conftest import SERVICE_NAMES, SERVICES, parse_env, run_services

pytestmark = pytest.mark.integration


def test_status_shows_both_services_running(services: dict[str, str]) -> None:
    status = run_services("status")
    assert status.returncode == 0, status.stdout + status.stderr
    lines = {line.split()[0]: line for line in status.stdout.splitlines()}
    assert set(lines) == set(SERVICE_NAMES)
    for name in SERVICE_NAMES:
        assert re.match(rf"{name}\s+running\s+127\.0\.0\.1:\d+ ", lines[name]), lines[name]


def test_env_output_parses_and_evals(services: dict[str, str]) -> None:
    # the TLS listener's two variables come only from a broker started with it
    tls = {"WIREBUS_KAFKA_TLS_BOOTSTRAP", "WIREBUS_KAFKA_TLS_CAFILE"} & set(services)
    assert set(services) == {"WIREBUS_KAFKA_BOOTSTRAP", "WIREBUS_DATABASE_URL", *tls}
    assert len(tls) in (0, 2), services
    assert re.fullmatch(r"127\.0\.0\.1:\d+", services["WIREBUS_KAFKA_BOOTSTRAP"])
    if tls:
        assert re.fullmatch(r"127\.0\.0\.1:\d+", services["WIREBUS_KAFKA_TLS_BOOTSTRAP"])
        assert services["WIREBUS_KAFKA_TLS_CAFILE"].endswith("/kafka/tls/ca.pem")
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
