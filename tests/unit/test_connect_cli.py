"""``wirebus serve|run --connect-port``: the shop reachable by gRPC and by curl-style JSON."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import urllib.request

import grpc
import pytest
from click.testing import CliRunner
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

from tests.unit.test_cli import ENV, ROOT, free_port
from wirebus import cli

ITEMS = [{"sku": "book", "quantity": 1, "priceCents": "700"}]


def post_json(url: str, body: dict[str, object], origin: str) -> tuple[dict[str, object], str]:
    """What ``curl -H 'content-type: application/json' -d '{...}'`` does (plus an Origin)."""
    data = json.dumps(body).encode()
    headers = {"content-type": "application/json", "origin": origin}
    with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=10) as reply:
        return json.loads(reply.read()), reply.headers.get("access-control-allow-origin", "")


@pytest.mark.parametrize("command", ["serve", "run"])
def test_the_connect_port_serves_json_beside_grpc_and_both_stop_on_sigterm(command):
    port, connect_port = free_port(), free_port()
    args = [command, "examples.shop.app:app", "--port", str(port)]
    args += ["--connect-port", str(connect_port), "--cors-origin", "http://shop.test"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "wirebus", *args],
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            base = f"http://127.0.0.1:{connect_port}/shop.orders.v1.OrderService"
            placed, allowed = post_json(
                f"{base}/PlaceOrder", {"customerId": "c", "items": ITEMS}, "http://shop.test"
            )
            stub = orders_pb2_grpc.OrderServiceStub(channel)
            order = stub.GetOrder(orders_pb2.GetOrderRequest(order_id=str(placed["orderId"])))
            assert order.total_cents == 700
            assert allowed == "http://shop.test"
            read, _ = post_json(f"{base}/GetOrder", {"orderId": order.order_id}, "http://x")
            assert read["customerId"] == "c"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert f"Connect and gRPC-Web on http://127.0.0.1:{connect_port}" in stderr
    assert "Traceback" not in stderr


def test_connect_port_without_the_extra_is_one_error_line_naming_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a)
    )
    result = CliRunner().invoke(
        cli.main, ["serve", "examples.shop.app:app", "--connect-port", "0"], env=ENV
    )
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "Error: the Connect port needs uvicorn and httptools: pip install 'wirebus[connect]'"
    )


def test_cors_origin_needs_connect_port_and_a_scheme():
    runner = CliRunner()
    alone = runner.invoke(cli.main, ["serve", "examples.shop.app:app", "--cors-origin", "*"])
    assert alone.exit_code == 2
    assert "--cors-origin needs --connect-port" in alone.output
    bad = runner.invoke(
        cli.main,
        ["serve", "examples.shop.app:app", "--connect-port", "0", "--cors-origin", "shop.test"],
    )
    assert bad.exit_code == 1
    assert "a CORS origin is scheme://host[:port] or '*', not 'shop.test'" in bad.output
