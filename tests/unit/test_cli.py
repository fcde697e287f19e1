"""The ``wirebus`` command: describe, serve, run; clear one-line errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import grpc
import pytest
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
# The unit tier runs on embedded defaults: no deployment settings leak in from
# the shell (``make test`` exports the local Kafka and PostgreSQL for the
# integration tier).
ENV = {k: v for k, v in os.environ.items() if not k.startswith("WIREBUS_")}
ENV["PYTHONPATH"] = f"{ROOT / 'gen' / 'python'}{os.pathsep}{ROOT}"


def wirebus(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wirebus", *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_describe_lists_each_method_with_its_handler_and_each_event_with_its_handlers():
    result = wirebus("describe", "examples.shop.app:app")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "/shop.orders.v1.OrderService/PlaceOrder [unary_unary] -> " in out
    assert "/shop.orders.v1.OrderService/ListOrders [unary_stream] -> " in out
    assert "examples.shop.orders.handlers.list_orders" in out
    assert (
        "shop.orders.v1.OrderPlaced on topic shop.orders.v1 -> examples.shop.payments.handlers"
        in out
    )
    assert "shop.payments.v1.PaymentCaptured on topic shop.payments.v1 -> " in out
    assert "shop.orders.v1: shop.orders.v1.OrderPlaced (dlq shop.orders.v1.dlq)" in out


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("no.such.module:app", "cannot import 'no.such.module'"),
        ("examples.shop.app:missing", "has no attribute 'missing'"),
        ("examples.shop.app:log", "not a wirebus.App"),
        ("examples.shop.app", "expected MODULE:ATTR"),
    ],
)
def test_a_bad_target_is_one_clear_line_and_a_non_zero_exit(target, expected):
    result = wirebus("describe", target)
    assert result.returncode != 0
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("Error")]) == 1


def test_a_wiring_error_is_one_line_naming_every_unbound_method(tmp_path):
    (tmp_path / "broken_app.py").write_text(
        textwrap.dedent(
            """
            from shop.orders.v1 import orders_pb2
            from wirebus import App
            app = App(services=[orders_pb2])
            """
        )
    )
    for command in ("describe", "serve"):
        result = wirebus(command, "broken_app:app", "--app-dir", str(tmp_path))
        assert result.returncode != 0
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
        assert len(errors) == 1, result.stderr
        assert "PlaceOrder" in errors[0]
        assert "ListOrders" in errors[0]
        assert "Traceback" not in result.stderr


def test_an_import_that_raises_is_reported_without_a_traceback(tmp_path):
    (tmp_path / "raising_app.py").write_text("raise RuntimeError('boom at import')\n")
    result = wirebus("describe", "raising_app:app", "--app-dir", str(tmp_path))
    assert result.returncode != 0
    assert "RuntimeError: boom at import" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["serve", "run"])
def test_serving_answers_grpc_and_stops_cleanly_on_sigterm(command):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "wirebus", command, "examples.shop.app:app", "--port", str(port)],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            stub = orders_pb2_grpc.OrderServiceStub(channel)
            placed = stub.PlaceOrder(
                orders_pb2.PlaceOrderRequest(
                    customer_id="c", items=[orders_pb2.LineItem(sku="s", quantity=1, price_cents=5)]
                ),
                timeout=10,
            )
            deadline = time.monotonic() + 10
            while True:  # with `run`, payment arrives through the embedded broker
                order = stub.GetOrder(
                    orders_pb2.GetOrderRequest(order_id=placed.order_id), timeout=10
                )
                if order.status == orders_pb2.ORDER_STATUS_PAID or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert order.status == orders_pb2.ORDER_STATUS_PAID
    finally:
        time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "stopping" in stderr
    assert "Traceback" not in stderr


def test_make_demo_script_drives_every_call_and_reports_ok():
    result = subprocess.run(
        [sys.executable, "-m", "examples.shop.demo"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo OK" in result.stdout
    assert "ORDER_STATUS_PAID" in result.stdout
    assert "reason ORDER_NOT_FOUND" in result.stdout
