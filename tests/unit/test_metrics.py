"""Prometheus metrics: outbox lag and relay and consumer counts, on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from examples.shop.app import app as shop_app
from examples.shop.orders.messages import GetOrder, LineItem, OrderStatus, PlaceOrder
from wirebus.runtime import Runtime
from wirebus.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


async def test_metrics_count_published_rows_and_consumed_records(tmp_path: Path) -> None:
    port = free_port()
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/shop.db")
    async with Runtime(shop_app, settings, consume=True, metrics_port=port) as runtime:
        assert runtime.mediator is not None
        items = (LineItem(sku="a", quantity=1, price_cents=5),)
        ref = await runtime.mediator.send(PlaceOrder(customer_id="m", items=items))
        for _ in range(400):  # bounded: relay and consumers are asynchronous
            order = await runtime.mediator.send(GetOrder(order_id=ref.order_id))
            if order.status is OrderStatus.PAID:
                break
            await asyncio.sleep(0.025)
        assert order.status is OrderStatus.PAID
        values = await asyncio.to_thread(scrape, port)
    # OrderPlaced and PaymentCaptured went through the outbox and were consumed
    assert values["wirebus_outbox_published_total"] >= 2
    assert values['wirebus_consumer_records_total{outcome="handled"}'] >= 2
    assert "wirebus_outbox_pending" in values
    assert "wirebus_outbox_oldest_pending_seconds" in values


async def test_metrics_are_served_on_the_interface_given_by_metrics_host(tmp_path: Path) -> None:
    port = free_port()
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/shop.db")
    # 127.0.0.2 is another loopback address: bound there, 127.0.0.1 does not answer
    runtime = Runtime(shop_app, settings, metrics_port=port, metrics_host="127.0.0.2")
    async with runtime:
        url = f"http://127.0.0.2:{port}/metrics"
        text = await asyncio.to_thread(_get, url)
        assert "wirebus_outbox_pending" in text
        with pytest.raises(urllib.error.URLError):
            await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def test_run_and_serve_take_a_metrics_host() -> None:
    from click.testing import CliRunner

    from wirebus.cli import main

    for command in ("serve", "run", "consume", "relay"):
        result = CliRunner().invoke(main, [command, "--help"])
        assert "--metrics-host" in result.output, command
