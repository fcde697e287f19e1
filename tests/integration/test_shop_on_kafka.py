"""The shop on Kafka: slices in separate processes, and the topic as other tools see it."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import grpc_tools
import pytest
from shop.orders.v1 import orders_pb2, orders_pb2_grpc
from shop.payments.v1 import payments_pb2

from tests.checkout import PYTHONPATH, ROOT

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "wirebus", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def stop(proc: subprocess.Popen[bytes], log: Path) -> str:
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    return log.read_text(errors="replace")


async def _canary_consumed(bootstrap: str, group: str, within: float = 60.0) -> None:
    """Return once ``group`` has consumed a canary written to shop.payments.v1 now.

    A consumer started at "latest" resolves its position some time after its
    assignment; a record written before that is never seen. So write PaymentDeclined
    canaries (of no real order: the payments slice ignores them, and commits) until
    the group's committed offset passes one: from then on it sees every new record.
    """
    from aiokafka import AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    from wirebus.cloudevents import Attributes
    from wirebus.testing import wait_until

    ce_type = payments_pb2.PaymentDeclined.DESCRIPTOR.full_name
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await producer.start()
    await admin.start()
    try:

        async def consumed_a_new_canary() -> bool:
            order_id = f"canary-{uuid.uuid4()}"
            canary = payments_pb2.PaymentDeclined(order_id=order_id, reason="canary")
            sent = await producer.send_and_wait(
                "shop.payments.v1",
                canary.SerializeToString(),
                key=order_id.encode(),
                headers=Attributes.new(source="test", type=ce_type).headers(),
            )
            tp = TopicPartition(sent.topic, sent.partition)

            async def committed_past_it() -> bool:
                offsets = await admin.list_consumer_group_offsets(group)
                return tp in offsets and offsets[tp].offset > sent.offset

            try:
                return await wait_until(committed_past_it, within=3, interval=0.1)
            except TimeoutError:  # written before the position was resolved: try again
                return False

        await wait_until(consumed_a_new_canary, within=within, interval=0)
    finally:
        await admin.close()
        await producer.stop()


def place_order(stub: orders_pb2_grpc.OrderServiceStub, customer: str) -> str:
    reply = stub.PlaceOrder(
        orders_pb2.PlaceOrderRequest(
            customer_id=customer,
            items=[orders_pb2.LineItem(sku="book", quantity=2, price_cents=1250)],
        ),
        timeout=30,
    )
    return reply.order_id


def test_payments_consumer_process_captures_and_the_gateway_shows_paid(
    bootstrap: str, fresh: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": PYTHONPATH,
        "WIREBUS_KAFKA_BOOTSTRAP": bootstrap,
        "WIREBUS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/inbox.db",
    }
    port = free_port()
    app = "examples.shop.app:app"
    gateway_log, payments_log = tmp_path / "gateway.log", tmp_path / "payments.log"
    # the orders slice with the checkout saga (gateway + the saga's handlers) and the
    # payments slice (answers CapturePayment) run as two processes, as two teams would
    # each slice in its own consumer group; payments reads only new records, so the
    # topic's history (other tests, benchmarks) does not stand between it and ours
    gateway = start(
        [
            "run",
            app,
            "--port",
            str(port),
            "--slice",
            "orders",
            "--slice",
            "checkout",
            "--group",
            f"{fresh}-orders",
            "--start-at",
            "latest",
        ],
        env,
        gateway_log,
    )
    payments = start(
        ["consume", app, "--group", f"{fresh}-payments", "--slice", "payments",
         "--start-at", "latest"],
        env,
        payments_log,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while "partitions assigned: [" not in payments_log.read_text(errors="replace"):
            assert time.monotonic() < deadline, payments_log.read_text()
            assert payments.poll() is None, payments_log.read_text()
            time.sleep(0.1)
        # the consumer resolves "latest" after the assignment: wait until it consumes
        asyncio.run(_canary_consumed(bootstrap, f"{fresh}-payments"))
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
            stub = orders_pb2_grpc.OrderServiceStub(channel)
            order_id = place_order(stub, f"{fresh}-customer")
            deadline = time.monotonic() + 60
            while True:
                order = stub.GetOrder(orders_pb2.GetOrderRequest(order_id=order_id), timeout=10)
                if order.status == orders_pb2.ORDER_STATUS_PAID or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert order.status == orders_pb2.ORDER_STATUS_PAID, (
                payments_log.read_text()[-3000:] + gateway_log.read_text()[-3000:]
            )
    finally:
        payments_out = stop(payments, payments_log)
        gateway_out = stop(gateway, gateway_log)
    assert payments.returncode == 0, payments_out
    assert gateway.returncode == 0, gateway_out
    assert "consuming shop.payments.v1 as " in payments_out
    assert "(Kafka)" in gateway_out


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")
def test_kcat_reads_the_topic_and_protoc_decodes_the_bare_value(
    bootstrap: str, fresh: str, tmp_path: Path
) -> None:
    import asyncio
    import datetime as dt

    from wirebus import Event
    from wirebus.codec import EventRegistry
    from wirebus.kafka import KafkaEventPublisher

    topic = f"{fresh}.orders"

    class Placed(Event, proto=orders_pb2.OrderPlaced, key="order_id", topic=topic):
        order_id: str
        customer_id: str
        total_cents: int
        placed_at: dt.datetime

    registry = EventRegistry()
    registry.add(Placed)
    event = Placed(
        order_id="o-kcat",
        customer_id="alice",
        total_cents=2500,
        placed_at=dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC),
    )

    async def publish() -> None:
        async with KafkaEventPublisher(bootstrap, registry, source="kcat-test") as publisher:
            await publisher.publish(event)

    asyncio.run(publish())
    value = tmp_path / "value.bin"
    with value.open("wb") as out:
        subprocess.run(
            ["kcat", "-b", bootstrap, "-t", topic, "-C", "-c", "1", "-e", "-f", "%s", "-q"],
            stdout=out,
            check=True,
            timeout=60,
        )
    headers = subprocess.run(
        ["kcat", "-b", bootstrap, "-t", topic, "-C", "-c", "1", "-e", "-f", "%k|%h", "-q"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert headers.startswith("o-kcat|")
    assert "ce_type=shop.orders.v1.OrderPlaced" in headers
    assert "content-type=application/protobuf" in headers
    assert value.read_bytes() == event.proto().SerializeToString()  # nothing around it

    include = Path(grpc_tools.__file__).parent / "_proto"
    decoded = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{ROOT / 'proto'}",
            f"-I{include}",
            "--decode=shop.orders.v1.OrderPlaced",
            "shop/orders/v1/orders.proto",
        ],
        input=value.read_bytes(),
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    assert 'order_id: "o-kcat"' in decoded
    assert 'customer_id: "alice"' in decoded
    assert "total_cents: 2500" in decoded
