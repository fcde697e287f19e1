"""Standard gRPC tools work against the gateway with no local protos (server reflection)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from examples.shop.app import app
from wirebus import Gateway, GatewayConfig

BUF = Path(sys.executable).parent / "buf"
pytestmark = pytest.mark.skipif(not BUF.exists(), reason="buf is not installed in this environment")


async def buf_curl(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(BUF),
        "curl",
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_buf_curl_lists_methods_and_calls_place_order_by_reflection(tmp_path):
    async with Gateway(app, GatewayConfig(port=0)) as gateway:
        base = f"http://{gateway.address}"
        code, out, err = await buf_curl("--list-methods", base)
        assert code == 0, err
        assert "shop.orders.v1.OrderService/PlaceOrder" in out.split()
        assert "shop.orders.v1.OrderService/ListOrders" in out.split()

        body = {"customerId": "alice", "items": [{"sku": "a", "quantity": 2, "priceCents": "150"}]}
        code, out, err = await buf_curl(
            "-d", json.dumps(body), f"{base}/shop.orders.v1.OrderService/PlaceOrder"
        )
        assert code == 0, err
        order_id = json.loads(out)["orderId"]

        code, out, err = await buf_curl(
            "-d", json.dumps({"orderId": order_id}), f"{base}/shop.orders.v1.OrderService/GetOrder"
        )
        assert code == 0, err
        order = json.loads(out)
        assert (order["totalCents"], order["status"]) == ("300", "ORDER_STATUS_PAID")
