"""``wirebus run`` on SIGTERM drains gracefully: a subprocess on real Kafka and a SQLite outbox.

The app's ``PlaceOrder`` emits an ``OrderPlaced`` (through the outbox) and,
for the slow customer, takes three seconds. Quick calls commit their events,
a slow call starts, the process gets SIGTERM. During the drain health
reports NOT_SERVING and a new call is refused with UNAVAILABLE; the slow call
completes OK; the process exits 0 within the grace; and every event
committed before the exit is on Kafka afterwards (the relay left none behind).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

from tests.integration.conftest import read_records
from tests.unit.test_cli import ENV, ROOT, free_port
from wirebus.testing import wait_until

DRAIN_APP = """
    import asyncio
    import datetime as dt
    import os

    from shop.orders.v1 import orders_pb2

    from wirebus import App, Context, Event, Router


    class Placed(Event, proto=orders_pb2.OrderPlaced, key="order_id",
                 topic=os.environ["DRAIN_TOPIC"]):
        order_id: str
        customer_id: str
        total_cents: int
        placed_at: dt.datetime


    router = Router()


    @router.handler
    async def place(
        cmd: orders_pb2.PlaceOrderRequest, ctx: Context
    ) -> orders_pb2.PlaceOrderResponse:
        order_id = cmd.customer_id
        ctx.emit(Placed(order_id=order_id, customer_id=order_id, total_cents=1,
                        placed_at=dt.datetime.now(dt.UTC)))
        if order_id.startswith("slow"):
            with open(os.environ["DRAIN_STARTED"], "a") as started:
                started.write(order_id + "\\n")
            await asyncio.sleep(3.0)
        return orders_pb2.PlaceOrderResponse(order_id=order_id)


    app = App(name="drain", services=[orders_pb2], routers=[router], events=[Placed],
              allow_unbound=True)
"""

GRACE = 10.0


def placing(order_id: str) -> orders_pb2.PlaceOrderRequest:
    return orders_pb2.PlaceOrderRequest(customer_id=order_id)


async def health_statuses(channel: grpc.aio.Channel, seen: list[int]) -> None:
    """Append each status the health Watch stream reports (until the server goes)."""
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
    try:
        async for reply in watch:
            seen.append(reply.status)
    except grpc.aio.AioRpcError:
        pass  # the server closed the stream as it stopped


async def test_sigterm_drains_calls_reports_not_serving_and_leaves_no_event_behind(
    tmp_path: Path, bootstrap: str, fresh: str
) -> None:
    (tmp_path / "drain_app.py").write_text(textwrap.dedent(DRAIN_APP))
    started = tmp_path / "started.txt"
    port = free_port()
    env = {
        **ENV,
        "WIREBUS_KAFKA_BOOTSTRAP": bootstrap,
        "WIREBUS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/drain.db",
        "DRAIN_TOPIC": fresh,
        "DRAIN_STARTED": str(started),
    }
    args = ["run", "drain_app:app", "--app-dir", str(tmp_path), "--port", str(port)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wirebus", *args, "--grace", str(GRACE),
        cwd=ROOT, env=env, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 60)
            stub = orders_pb2_grpc.OrderServiceStub(channel)
            quick = [f"quick-{i}" for i in range(20)]
            for order_id in quick:
                await stub.PlaceOrder(placing(order_id), timeout=30)
            statuses: list[int] = []
            watching = asyncio.ensure_future(health_statuses(channel, statuses))
            await wait_until(lambda: health_pb2.HealthCheckResponse.SERVING in statuses)
            slow = asyncio.ensure_future(stub.PlaceOrder(placing("slow-1"), timeout=30))
            await wait_until(lambda: started.exists() and started.read_text().split())
            proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            await wait_until(lambda: health_pb2.HealthCheckResponse.NOT_SERVING in statuses)
            assert not slow.done()  # NOT_SERVING is reported while the slow call runs
            try:
                await stub.PlaceOrder(placing("late-1"), timeout=30)
                late_code = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as exc:
                late_code = exc.code()
            assert late_code == grpc.StatusCode.UNAVAILABLE
            reply = await slow
            assert reply.order_id == "slow-1"
            watching.cancel()
        _, err = await asyncio.wait_for(proc.communicate(), GRACE + 10)
        assert proc.returncode == 0, err.decode()
        assert time.monotonic() - signalled < GRACE + 5
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    committed = {*quick, "slow-1"}
    records = await read_records(bootstrap, fresh, len(committed), within=30, grace=1.0)
    keys = sorted(r.key.decode() for r in records)
    assert keys == sorted(committed)  # every committed event, once; not the refused call's
