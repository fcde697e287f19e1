"""The Connect port's calls in the gateway's metrics and access log (a real Runtime)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from examples.shop.app import app as shop_app
from tests.unit._connect import envelope, request
from tests.unit.test_gateway_observability import labels
from tests.unit.test_metrics import free_port, scrape
from wirebus.access_log import ACCESS_LOGGER
from wirebus.connect import ConnectConfig
from wirebus.gateway import GatewayConfig
from wirebus.runtime import Runtime
from wirebus.settings import Settings

SERVICE = "/shop.orders.v1.OrderService"
PLACE = json.dumps({"customerId": "c", "items": [{"sku": "s", "quantity": 1}]}).encode()


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[tuple[str, int]]:
    """``(the Connect port's URL, the metrics port)`` of the shop as ``wirebus run`` runs it."""
    port = free_port()
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/shop.db")
    async with Runtime(
        shop_app, settings, gateway=GatewayConfig(port=0), connect=ConnectConfig(port=0),
        consume=True, metrics_port=port,
    ) as runtime:  # fmt: skip
        assert runtime.connect is not None
        yield runtime.connect.url, port


async def test_connect_calls_are_counted_in_the_grpc_server_series_by_method_and_code(shop):
    url, port = shop
    for _ in range(2):
        assert (await request(f"{url}{SERVICE}/PlaceOrder", PLACE)).status == 200
    assert (await request(f"{url}{SERVICE}/PlaceOrder", b'{"customerId": "c"}')).status == 400
    assert (await request(f"{url}{SERVICE}/GetOrder", b'{"orderId": "missing"}')).status == 404
    listed = await request(
        f"{url}{SERVICE}/ListOrders", envelope(b'{"customerId": "c"}'),
        content_type="application/connect+json",
    )  # fmt: skip
    assert listed.status == 200
    values = await asyncio.to_thread(scrape, port)
    place_order = labels("PlaceOrder")
    assert values[f"grpc_server_started_total{{{place_order}}}"] == 3
    assert values[f"grpc_server_msg_sent_total{{{place_order}}}"] == 2
    handled = "grpc_server_handled_total{%s}"
    assert values[handled % labels("PlaceOrder", grpc_code="OK")] == 2
    assert values[handled % labels("PlaceOrder", grpc_code="InvalidArgument")] == 1
    assert values[handled % labels("GetOrder", grpc_code="NotFound")] == 1
    stream = labels("ListOrders", grpc_type="server_stream")
    assert values[f"grpc_server_msg_sent_total{{{stream}}}"] == 2  # both orders of c
    assert values[handled % labels("ListOrders", grpc_type="server_stream", grpc_code="OK")] == 1


async def test_each_connect_call_writes_the_gateways_access_line(shop, caplog):
    url, _ = shop
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    headers = {"X-Correlation-Id": "corr-7"}
    await request(f"{url}{SERVICE}/PlaceOrder", PLACE, headers=headers)
    await request(f"{url}{SERVICE}/GetOrder", b'{"orderId": "missing"}')
    await request(f"{url}/grpc.health.v1.Health/Check", b"{}")  # not an app method: no line
    lines = [r for r in caplog.records if r.name == ACCESS_LOGGER]
    assert [(r.grpc_method, r.grpc_code) for r in lines] == [
        (f"{SERVICE}/PlaceOrder", "OK"),
        (f"{SERVICE}/GetOrder", "NOT_FOUND"),
    ]
    placed, missing = lines
    assert placed.correlation_id == "corr-7"
    assert re.fullmatch("[0-9a-f]{32}", missing.correlation_id)
    assert placed.peer.startswith("ipv4:127.0.0.1:")
    assert all('"c"' not in r.getMessage() for r in caplog.records)  # no payloads


async def test_a_connect_call_of_a_bidi_method_counts_in_the_grpc_ports_bidi_series(shop):
    url, port = shop
    await request(
        f"{url}{SERVICE}/WatchOrders", envelope(b"{}"), content_type="application/connect+json"
    )  # refused: bidi needs the gRPC port
    values = await asyncio.to_thread(scrape, port)
    bidi = labels("WatchOrders", grpc_type="bidi_stream", grpc_code="Unimplemented")
    assert values[f"grpc_server_handled_total{{{bidi}}}"] == 1
    assert not any('grpc_type="stream_stream"' in name for name in values)
