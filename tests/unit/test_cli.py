"""The ``wirebus`` command: describe, serve, run; clear one-line errors."""

from __future__ import annotations

import os
import shutil
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

from tests.checkout import PYTHONPATH, ROOT

# The unit tier runs on embedded defaults: no deployment settings leak in from
# the shell (``make test`` exports the local Kafka and PostgreSQL for the
# integration tier).
ENV = {k: v for k, v in os.environ.items() if not k.startswith("WIREBUS_")}
# This checkout's src first: an installed (editable) wirebus may be another one.
ENV["PYTHONPATH"] = PYTHONPATH
# The same, as if `buf generate` had never run (wirebus still finds gen/python through
# buf.gen.yaml: run from a directory without it to hide it).
ENV_WITHOUT_GEN = {**ENV, "PYTHONPATH": os.pathsep.join(str(p) for p in (ROOT / "src", ROOT))}


def wirebus(
    *args: str, cwd: Path = ROOT, env: dict[str, str] = ENV
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wirebus", *args],
        cwd=cwd,
        env=env,
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
        "shop.orders.v1.OrderPlaced on topic shop.orders.v1 -> wirebus.saga.checkout.start_on"
        in out
    )
    assert (
        "shop.payments.v1.CapturePayment on topic shop.payments.v1 -> examples.shop.payments" in out
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
        # reads cleanly: it was "cannot bind every method:; /shop...; (register ...)"
        assert errors[0].startswith("Error: the gateway cannot bind every method: /shop.orders")
        assert ":;" not in errors[0]
        assert errors[0].endswith(
            " (register the handlers, or pass allow_unbound=True to answer UNIMPLEMENTED)"
        )


def test_a_port_in_use_is_one_error_line_and_a_non_zero_exit(tmp_path):
    """It was ~40 lines of traceback ending in grpc's "Failed to bind"."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = wirebus(
            "serve",
            "examples.shop.app:app",
            "--port",
            str(port),
            cwd=tmp_path,
            env={**ENV, "PYTHONPATH": ENV["PYTHONPATH"] + os.pathsep + str(ROOT)},
        )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert errors == [
        f"Error: cannot listen on 127.0.0.1:{port}: the port is in use by another process,"
        " or the address is not this machine's (choose another with --port)"
    ], result.stderr
    assert "Traceback" not in result.stderr


def test_outbox_status_without_a_database_says_so_and_creates_nothing(tmp_path):
    """It created an empty wirebus.db and printed SQLAlchemy's 'no such table' with its SQL."""
    result = wirebus("outbox", "status", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: no outbox database: wirebus.db does not exist")
    assert not (tmp_path / "wirebus.db").exists()

    (tmp_path / "wirebus.db").touch()  # a database without wirebus's tables
    result = wirebus("outbox", "status", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "Error: the database has no wirebus tables (no such table: wirebus_outbox):"
        " run `wirebus db upgrade APP`"
    ]


def test_an_import_that_raises_is_reported_without_a_traceback(tmp_path):
    (tmp_path / "raising_app.py").write_text("raise RuntimeError('boom at import')\n")
    result = wirebus("describe", "raising_app:app", "--app-dir", str(tmp_path))
    assert result.returncode != 0
    assert "RuntimeError: boom at import" in result.stderr
    assert "Traceback" not in result.stderr


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return errors[0]


def write_buf_workspace(root: Path) -> None:
    """A project with protos and a buf template, whose code was never generated."""
    (root / "buf.yaml").write_text("version: v2\nmodules:\n  - path: proto\n")
    (root / "buf.gen.yaml").write_text(
        "version: v2\nplugins:\n"
        "  - protoc_builtin: python\n    out: build/gen-py\n"
        "  - local: protoc-gen-go\n    out: build/gen-go\n"
    )
    (root / "proto" / "acme" / "v1").mkdir(parents=True)
    (root / "proto" / "acme" / "v1" / "things.proto").write_text(
        'syntax = "proto3";\npackage acme.v1;\nmessage Thing {}\n'
    )
    (root / "acme_app.py").write_text(
        "from acme.v1 import things_pb2\nfrom wirebus import App\napp = App(services=[])\n"
    )


@pytest.mark.parametrize("command", ["serve", "describe"])
def test_missing_generated_code_says_to_run_buf_generate_and_exits_2(tmp_path, command):
    write_buf_workspace(tmp_path)

    result = wirebus(command, "acme_app:app", cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    error = one_error_line(result)
    assert "cannot import 'acme_app'" in error
    assert "generated module 'acme' is missing" in error
    assert "run `buf generate`" in error
    assert "build/gen-py on PYTHONPATH" in error


def test_missing_generated_code_is_found_from_the_app_dir_too(tmp_path):
    write_buf_workspace(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    result = wirebus("describe", "acme_app:app", "--app-dir", str(tmp_path), cwd=elsewhere)

    assert result.returncode == 2, result.stderr
    error = one_error_line(result)
    assert f"run `buf generate` in {tmp_path}" in error
    assert f"{tmp_path / 'build' / 'gen-py'} on PYTHONPATH" in error


def test_a_missing_module_of_a_top_level_proto_file_is_generated_code_too(tmp_path):
    write_buf_workspace(tmp_path)
    (tmp_path / "proto" / "things.proto").write_text('syntax = "proto3";\nmessage Top {}\n')
    (tmp_path / "top_app.py").write_text("import things_pb2\n")

    result = wirebus("describe", "top_app:app", cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert "generated module 'things_pb2' is missing" in one_error_line(result)


def test_the_shop_without_its_generated_code_says_to_run_buf_generate(tmp_path):
    # a checkout where `buf generate` never ran: this one's gen/python would be found
    for name in ("examples", "proto"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("buf.yaml", "buf.gen.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    env = {**ENV_WITHOUT_GEN, "PYTHONPATH": str(ROOT / "src")}

    result = wirebus("serve", "examples.shop.app:app", cwd=tmp_path, env=env)

    assert result.returncode == 2, result.stderr
    error = one_error_line(result)
    assert "generated module 'shop' is missing: run `buf generate`" in error
    assert "gen/python on PYTHONPATH" in error


@pytest.mark.parametrize("in_buf_workspace", [False, True])
def test_a_missing_module_that_no_proto_generates_is_an_ordinary_import_error(
    tmp_path, in_buf_workspace
):
    if in_buf_workspace:
        write_buf_workspace(tmp_path)
    (tmp_path / "typo_app.py").write_text("import no_such_dependency\n")

    result = wirebus("describe", "typo_app:app", cwd=tmp_path)

    assert result.returncode == 1
    error = one_error_line(result)
    assert "cannot import 'typo_app': No module named 'no_such_dependency'" in error
    assert "buf generate" not in error


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
    # the buf.validate rules of orders.proto, through the shop's Validation stage
    out = result.stdout
    assert "field items: must contain at least 1 item(s) [repeated.min_items]" in out
    assert "field items[0].quantity: must be greater than or equal to 1 [int32.gte]" in out
