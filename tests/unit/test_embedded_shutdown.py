"""``wirebus serve`` on embedded defaults loses nothing it acknowledged when it is stopped.

Embedded defaults: a SQLite file (``wirebus.db`` in the working directory),
the in-memory broker and the app's consumers in the same process. A SIGTERM
at an arbitrary moment, with calls in flight and events between the relay
and the consumers, must leave every acknowledged order to be finished by the
next start on the same file (issue 12, defect 3).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import grpc.aio
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

from examples.shop.app import app as shop_app
from examples.shop.orders.messages import GetOrder, LineItem, OrderStatus, OrderView, PlaceOrder
from tests.checkout import PYTHONPATH, ROOT
from wirebus.brokers.memory import InMemoryBroker
from wirebus.runtime import Runtime
from wirebus.settings import Settings
from wirebus.testing import wait_until

ENV = {k: v for k, v in os.environ.items() if not k.startswith("WIREBUS_")}
ENV["PYTHONPATH"] = PYTHONPATH
CALLERS = 200
# the outbox rows of one placed order, relayed together: OrderPlaced, and the
# OrderStatusChanged and OrderSnapshot of its first status
ROWS_PER_ORDER = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(workdir: Path, port: int) -> subprocess.Popen[str]:
    """``wirebus serve`` of the shop with nothing configured, in ``workdir``."""
    options = ["--app-dir", str(ROOT), "--port", str(port), "--log-level", "warning"]
    return subprocess.Popen(
        [sys.executable, "-m", "wirebus", "serve", "examples.shop.app:app", *options],
        cwd=workdir,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def reap(proc: subprocess.Popen[str]) -> None:
    """Kill ``proc`` if it still runs, and wait for it: a server left running (or a
    ``Popen`` collected unwaited) fails a later test with an unraisable ResourceWarning."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)
    if proc.stderr is not None:
        proc.stderr.close()


def order_request(n: int) -> orders_pb2.PlaceOrderRequest:
    item = orders_pb2.LineItem(sku=f"sku-{n}", quantity=1, price_cents=100 + n)
    return orders_pb2.PlaceOrderRequest(customer_id=f"c-{n}", items=[item])


async def place_until_stopped(
    stub: orders_pb2_grpc.OrderServiceStub, n: int, acked: list[str], stop: asyncio.Event
) -> None:
    """One caller: PlaceOrder after PlaceOrder; only an OK reply counts as acknowledged."""
    while not stop.is_set():
        try:
            ref = await stub.PlaceOrder(order_request(n), timeout=20)
        except grpc.aio.AioRpcError:
            return  # the server is going away: this call was not acknowledged
        acked.append(ref.order_id)


async def load_then_sigterm(proc: subprocess.Popen[str], address: str, after: float) -> list[str]:
    """200 concurrent callers; SIGTERM ``after`` seconds in; the acknowledged order ids."""
    acked: list[str] = []
    stop = asyncio.Event()
    async with grpc.aio.insecure_channel(address) as channel:
        await asyncio.wait_for(channel.channel_ready(), 30)
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        callers = [
            asyncio.create_task(place_until_stopped(stub, n, acked, stop)) for n in range(CALLERS)
        ]
        await asyncio.sleep(after)  # the moment of the SIGTERM, not a wait for an outcome
        proc.send_signal(signal.SIGTERM)
        stop.set()
        await asyncio.gather(*callers)
    return acked


async def pending_orders(address: str, order_ids: list[str]) -> list[str]:
    async with grpc.aio.insecure_channel(address) as channel:
        await asyncio.wait_for(channel.channel_ready(), 30)
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        left = []
        for order_id in order_ids:
            order = await stub.GetOrder(orders_pb2.GetOrderRequest(order_id=order_id), timeout=20)
            if order.status != orders_pb2.ORDER_STATUS_PAID:
                left.append(order_id)
        return left


async def test_every_order_acknowledged_before_a_sigterm_is_paid_after_a_restart_on_the_same_file(
    tmp_path: Path,
) -> None:
    port = free_port()
    first = serve(tmp_path, port)
    try:
        acked = await load_then_sigterm(first, f"127.0.0.1:{port}", after=2.0)
        _, stderr = await asyncio.to_thread(first.communicate, timeout=60)
    finally:
        reap(first)
    assert first.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert len(acked) >= CALLERS, "the load did not get going before the SIGTERM"

    second = serve(tmp_path, port)
    try:
        address = f"127.0.0.1:{port}"
        left = list(acked)

        async def all_paid() -> bool:
            left[:] = await pending_orders(address, left)
            return not left

        await wait_until(
            all_paid, within=90, interval=0.5, message=lambda: f"{len(left)} orders never paid"
        )
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            _, stderr = await asyncio.to_thread(second.communicate, timeout=60)
        finally:
            reap(second)
    assert second.returncode == 0, stderr


# ------------------------------------------------- the relay and the embedded broker


def settings_in(tmp_path: Path) -> Settings:
    return Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/shop.db")


def a_small_order() -> PlaceOrder:
    return PlaceOrder(customer_id="c-1", items=(LineItem(sku="pear", quantity=1, price_cents=90),))


async def pending_rows(runtime: Runtime) -> int:
    assert runtime.relay_worker is not None
    return (await runtime.relay_worker.stats()).pending


async def test_an_embedded_outbox_row_stays_until_the_subscribed_group_handled_its_record(
    tmp_path: Path,
) -> None:
    broker = InMemoryBroker()
    payments = broker.consumer(group="payments", topics=["shop.orders.v1"])
    async with Runtime(shop_app, settings_in(tmp_path), broker=broker, relay_poll=0.05) as runtime:
        assert runtime.mediator is not None
        await runtime.mediator.send(a_small_order())
        await wait_until(lambda: broker.records("shop.orders.v1"), within=10)
        # on the broker, not handled yet: the order's rows go once its OrderPlaced is handled
        assert await pending_rows(runtime) == ROWS_PER_ORDER

        await payments.start()
        batch = await payments.fetch(1.0)
        await payments.commit({tp: records[-1].offset + 1 for tp, records in batch.items()})

        await wait_until(lambda: _no_rows(runtime), within=10)  # handled: now it goes
        await payments.stop()


async def _no_rows(runtime: Runtime) -> bool:
    return await pending_rows(runtime) == 0


async def test_records_not_handled_when_their_consumers_stop_are_published_again_on_restart(
    tmp_path: Path,
) -> None:
    broker = InMemoryBroker()
    shop_group = broker.consumer(group="shop", topics=["shop.orders.v1"])
    await shop_group.start()
    async with Runtime(shop_app, settings_in(tmp_path), broker=broker, relay_poll=0.05) as runtime:
        assert runtime.mediator is not None
        ref = await runtime.mediator.send(a_small_order())
        await wait_until(lambda: broker.records("shop.orders.v1"), within=10)
        await shop_group.stop()  # as at a shutdown: the group leaves before it handled it
        assert await pending_rows(runtime) == ROWS_PER_ORDER

    # The next start on the same file: a fresh embedded broker, the app's own consumers.
    async with Runtime(shop_app, settings_in(tmp_path), consume=True, relay_poll=0.05) as again:
        assert again.mediator is not None
        mediator = again.mediator

        async def paid() -> bool:
            order: OrderView = await mediator.send(GetOrder(order_id=ref.order_id))
            return order.status is OrderStatus.PAID

        await wait_until(paid, within=20)
        await wait_until(lambda: _no_rows(again), within=10)
