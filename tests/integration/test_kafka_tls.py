"""Events over the broker's TLS listener, with ``KafkaSecurity(protocol="SSL")``.

``scripts/services`` gives the single broker an SSL listener
(``WIREBUS_KAFKA_TLS_BOOTSTRAP``, default 127.0.0.1:9094) whose certificate an
openssl-made CA signed (``WIREBUS_KAFKA_TLS_CAFILE``). A broker started by an
older script has no such listener: then these tests skip, and restarting the
services (``scripts/services restart kafka``) adds it. They never restart it
themselves: other runs may be using the broker.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme
from shop.orders.v1 import orders_pb2

from tests.integration.conftest import parse_env, run_services
from wirebus import App, Event, Router
from wirebus.consumer import EventProcessor
from wirebus.consumer_runner import ConsumerRunner
from wirebus.errors import ConsumeError, PublishError
from wirebus.inbox import InMemoryInbox
from wirebus.kafka import KafkaConsumer, KafkaEventPublisher, KafkaSecurity, ensure_topics
from wirebus.testing import wait_until

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
REFUSED_WITHIN = 30.0  # seconds: a refused handshake must fail, not hang
TLS_VARS = ("WIREBUS_KAFKA_TLS_BOOTSTRAP", "WIREBUS_KAFKA_TLS_CAFILE")


def services_env() -> dict[str, str]:
    done = run_services("env")
    assert done.returncode == 0, done.stderr
    return parse_env(done.stdout)


@pytest.fixture(scope="module")
def tls_broker(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(bootstrap, CA file) of the running broker's SSL listener.

    Starts the services only when no broker runs at all (as the ``services``
    fixture does, e.g. in CI); a running broker without the listener is left alone.
    """
    env = services_env()
    if "WIREBUS_KAFKA_BOOTSTRAP" not in env:
        env = request.getfixturevalue("services")
    if not all(name in env for name in TLS_VARS):
        pytest.skip(
            "the running broker has no TLS listener (started by an older scripts/services):"
            " run `scripts/services restart kafka` when nobody else uses it"
        )
    return env["WIREBUS_KAFKA_TLS_BOOTSTRAP"], env["WIREBUS_KAFKA_TLS_CAFILE"]


def placed_type(topic: str) -> type[Event]:
    class Placed(Event, proto=orders_pb2.OrderPlaced, key="order_id", topic=topic):
        order_id: str
        customer_id: str
        total_cents: int
        placed_at: dt.datetime

    return Placed


def other_ca(directory: Path) -> KafkaSecurity:
    """TLS that trusts a CA of its own (trustme), not the one that signed the broker's."""
    ca_file = directory / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca_file))
    return KafkaSecurity(protocol="SSL", ca_file=str(ca_file))


async def consume(
    app: App, dead_letters: KafkaEventPublisher, port: KafkaConsumer, done: Callable[[], bool]
) -> ConsumerRunner:
    """Run the app's handlers on what ``port`` reads until ``done()`` (bounded)."""
    mediator = app.mediator()
    processor = EventProcessor(
        mediator, app.registry(), group=port.group, inbox=InMemoryInbox(), dead_letters=dead_letters
    )
    runner = ConsumerRunner(port, processor, poll_timeout=0.2)
    await runner.start()
    task = asyncio.create_task(runner.run())
    try:
        await wait_until(done, within=60, message="the events consumed over TLS")
    finally:
        await runner.stop()
        await asyncio.wait_for(task, 60)
        await mediator.close()
    return runner


async def test_events_are_published_and_consumed_over_the_tls_listener(
    tls_broker: tuple[str, str], fresh: str
) -> None:
    bootstrap, ca_file = tls_broker
    security = KafkaSecurity(protocol="SSL", ca_file=ca_file)
    topic, group = f"{fresh}.orders", f"{fresh}-group"
    Placed = placed_type(topic)
    seen: list[str] = []
    router = Router("tls-it")

    @router.handler
    async def record(event: Placed) -> None:  # type: ignore[valid-type]
        seen.append(event.order_id)

    app = App(name="tls-it", routers=[router])
    registry = app.registry()
    await ensure_topics(bootstrap, [topic], security=security)
    async with KafkaEventPublisher(bootstrap, registry, source="tls-it", security=security) as pub:
        events = [
            Placed(order_id=f"o{i}", customer_id="c", total_cents=i, placed_at=T0) for i in range(5)
        ]
        await pub.publish_many(events)
        runner = await consume(
            app,
            pub,
            KafkaConsumer(bootstrap, group=group, topics=[topic], security=security),
            lambda: len(seen) >= 5,
        )
    assert sorted(seen) == [f"o{i}" for i in range(5)]
    assert runner.outcomes == {"handled": 5}


async def test_a_publisher_trusting_another_ca_is_refused_with_a_publish_error(
    tls_broker: tuple[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bootstrap, _ = tls_broker
    publisher = KafkaEventPublisher(
        bootstrap, App(name="tls-it").registry(), source="tls-it", security=other_ca(tmp_path)
    )
    with caplog.at_level(logging.ERROR, logger="aiokafka"), pytest.raises(PublishError) as refused:
        await asyncio.wait_for(publisher.start(), REFUSED_WITHIN)
    assert f"cannot connect to {bootstrap}" in str(refused.value)
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text  # aiokafka logs why the handshake failed


async def test_a_consumer_trusting_another_ca_is_refused_with_a_consume_error(
    tls_broker: tuple[str, str], tmp_path: Path, fresh: str
) -> None:
    bootstrap, _ = tls_broker
    consumer = KafkaConsumer(
        bootstrap, group=f"{fresh}-group", topics=[f"{fresh}.orders"], security=other_ca(tmp_path)
    )
    with pytest.raises(ConsumeError) as refused:
        await asyncio.wait_for(consumer.start(), REFUSED_WITHIN)
    assert f"cannot join '{fresh}-group' at {bootstrap}" in str(refused.value)
