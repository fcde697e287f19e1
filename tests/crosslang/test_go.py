"""Go interoperates with wirebus: golden bytes, a grpc-go client, a franz-go consumer, grpcurl.

The Go side is the module in ``tests/crosslang/go`` (see its README.md). This
driver installs the Go protoc plugins and grpcurl into ``.cache/go/bin``,
generates Go code with ``buf generate --template buf.gen.go.yaml`` into
``gen/go``, starts ``wirebus run examples.shop.app:app --group shop-crosslang-go``
on the real Kafka of ``scripts/services`` (``shop_server`` in conftest.py), runs
``go test`` against it, decodes the bytes Go wrote with the Python classes, and
calls the gateway by reflection with grpcurl.

For the checkout saga (``checkout_test.go``) it seeds the stock of one SKU in the
shop's database, starts a second shop without the payments slice (``--slice`` of
every other router) and a payment timeout of ``PAYMENT_TIMEOUT`` seconds on the
embedded in-memory broker (on the shared Kafka any other shop's payments slice would
answer its CapturePayment), and after ``go test`` reads the stock and reservations
the saga left in both databases.
Everything Go downloads or builds is cached under ``.cache/go``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import descriptor_pool, json_format, message_factory
from shop.orders.v1 import orders_pb2  # noqa: F401  (registers the types by name)
from shop.payments.v1 import payments_pb2  # noqa: F401

from tests.crosslang.conftest import (
    GOLDEN,
    ROOT,
    BacklogFactory,
    ShopServer,
    ShopServerFactory,
    run_tool,
    tool_env,
)
from tests.crosslang.tls import PKI, serve_with_tls

if shutil.which("go") is None:
    pytest.skip(
        "the Go cross-language suite needs the go toolchain, and `go` is not on PATH",
        allow_module_level=True,
    )

pytestmark = pytest.mark.integration

GO_MODULE = ROOT / "tests" / "crosslang" / "go"
GEN_GO = ROOT / "gen" / "go"
GO_CACHE = ROOT / ".cache" / "go"
GOBIN = GO_CACHE / "bin"

# Pinned tools, installed with `go install` (skipped when the binary already has this version).
TOOLS = {
    "protoc-gen-go": ("google.golang.org/protobuf/cmd/protoc-gen-go", "v1.36.12"),
    "protoc-gen-go-grpc": ("google.golang.org/grpc/cmd/protoc-gen-go-grpc", "v1.6.2"),
    "grpcurl": ("github.com/fullstorydev/grpcurl/cmd/grpcurl", "v1.9.4"),
}
# The one-line module that makes the generated code importable through the
# `replace` in tests/crosslang/go/go.mod (gen/ is git-ignored and buf cleans it).
# The Go test of the gateway over mutual TLS: run on a TLS server of its own, not in go_run.
TLS_TEST = "^TestGatewayTLS$"
# The checkout saga's orders take this SKU, of which each shop has CHECKOUT_STOCK.
CHECKOUT_SKU = "go-checkout-book"
CHECKOUT_STOCK = 10
PAYMENT_TIMEOUT = 2  # seconds, SHOP_PAYMENT_TIMEOUT_SECONDS of the shop without payments
GEN_GO_MOD = "module github.com/wirebus/wirebus/gen/go\n\ngo 1.24\n"


def go_environ(**extra: str) -> dict[str, str]:
    env = tool_env(
        GOBIN,
        GOPATH=str(GO_CACHE),
        GOMODCACHE=str(GO_CACHE / "mod"),
        GOCACHE=str(GO_CACHE / "build"),
        GOBIN=str(GOBIN),
        GOFLAGS="-modcacherw -buildvcs=false",
        **extra,
    )
    env.pop("GOWORK", None)
    return env


def run(
    args: list[str],
    *,
    cwd: Path = ROOT,
    timeout: float,
    shop: ShopServer | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a Go tool; unless ``check`` is off, fail the test with its output if it fails."""
    return run_tool(args, cwd=cwd, env=go_environ(), timeout=timeout, shop=shop, check=check)


def installed_version(binary: Path) -> str | None:
    """The module version `go version -m` reports for a binary (None if it is missing)."""
    if not binary.exists():
        return None
    info = run(["go", "version", "-m", str(binary)], timeout=60, check=False)
    for line in info.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0] == "mod":
            return fields[2]
    return None


@pytest.fixture(scope="module")
def go_tools() -> dict[str, Path]:
    """protoc-gen-go, protoc-gen-go-grpc and grpcurl in .cache/go/bin."""
    paths = {}
    for name, (package, version) in TOOLS.items():
        binary = GOBIN / name
        if installed_version(binary) != version:
            run(["go", "install", f"{package}@{version}"], timeout=900)
        paths[name] = binary
    return paths


@pytest.fixture(scope="module")
def generated(go_tools: dict[str, Path]) -> Path:
    """Go code generated from proto/ into gen/go, made a module."""
    run(["buf", "generate", "--template", "buf.gen.go.yaml"], timeout=300)
    (GEN_GO / "go.mod").write_text(GEN_GO_MOD)
    assert (GEN_GO / "shop" / "orders" / "v1" / "orders_grpc.pb.go").exists()
    return GEN_GO


def seed_stock(server: ShopServer) -> None:
    """Give the shop CHECKOUT_STOCK of CHECKOUT_SKU (a SKU without a stock row is unlimited)."""
    assert server.database is not None
    with contextlib.closing(sqlite3.connect(server.database, timeout=30)) as db, db:
        db.execute(
            "INSERT INTO shop_stock (sku, available) VALUES (?, ?)", (CHECKOUT_SKU, CHECKOUT_STOCK)
        )


def stock_of(server: ShopServer, order_id: str) -> tuple[int, list[tuple[str, int]]]:
    """CHECKOUT_SKU's stock left in the shop's database, and what ``order_id`` holds reserved."""
    assert server.database is not None
    with contextlib.closing(sqlite3.connect(server.database, timeout=30)) as db:
        (available,) = db.execute(
            "SELECT available FROM shop_stock WHERE sku = ?", (CHECKOUT_SKU,)
        ).fetchone()
        reserved = db.execute(
            "SELECT sku, quantity FROM shop_reservations WHERE order_id = ?", (order_id,)
        ).fetchall()
    return available, reserved


def checkout_of(server: ShopServer, order_id: str) -> tuple[str, set[tuple[str, str, str]]]:
    """The status of ``order_id``'s checkout saga and its history's (step, phase, outcome)."""
    assert server.database is not None
    with contextlib.closing(sqlite3.connect(server.database, timeout=30)) as db:
        status, history = db.execute(
            "SELECT status, history FROM wirebus_saga WHERE saga_type = 'checkout' AND \"key\" = ?",
            (order_id,),
        ).fetchone()
    return status, {(h["step"], h["phase"], h["outcome"]) for h in json.loads(history)}


@pytest.fixture(scope="module")
def shop(shop_server: ShopServerFactory) -> Iterator[ShopServer]:
    with shop_server("shop-crosslang-go") as server:
        seed_stock(server)
        yield server


@pytest.fixture(scope="module")
def shop_without_payments(shop_server: ShopServerFactory) -> Iterator[ShopServer]:
    """The shop consuming for every router but payments, in-memory: nobody pays."""
    from examples.shop.app import app

    slices = sorted({spec.router for spec in app.specs} - {"payments"})
    args = [arg for name in slices for arg in ("--slice", name)]
    env = {"SHOP_PAYMENT_TIMEOUT_SECONDS": str(PAYMENT_TIMEOUT)}
    with shop_server("shop-crosslang-go-no-payments", kafka=False, args=args, env=env) as server:
        seed_stock(server)
        yield server


@pytest.fixture(scope="module")
def go_run(
    generated: Path,
    shop: ShopServer,
    shop_without_payments: ShopServer,
    kafka_bootstrap: str,
    seeded_backlog: BacklogFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """`go test ./... -count=1 -v` against the shop; its result and the bytes Go wrote."""
    out = tmp_path_factory.mktemp("go-out")
    env = go_environ(
        WIREBUS_GOLDEN_DIR=str(GOLDEN),
        WIREBUS_GO_OUT=str(out),
        WIREBUS_GRPC_ADDR=shop.address,
        WIREBUS_CONNECT_URL=shop.connect_url,
        WIREBUS_KAFKA_BOOTSTRAP=kafka_bootstrap,
        WIREBUS_READER_GROUP=shop.reader_group,
        WIREBUS_CHECKOUT_SKU=CHECKOUT_SKU,
        WIREBUS_NO_PAYMENTS_GRPC_ADDR=shop_without_payments.address,
        WIREBUS_PAYMENT_TIMEOUT_SECONDS=str(PAYMENT_TIMEOUT),
        **seeded_backlog("crosslang-go").env(),
    )
    done = run_tool(
        ["go", "test", "./...", "-count=1", "-v", "-timeout=5m", f"-skip={TLS_TEST}"],
        cwd=GO_MODULE,
        env=env,
        timeout=900,
        shop=shop,
        check=False,
    )
    return done, out


def test_go_tests_pass_against_the_shop(
    go_run: tuple[subprocess.CompletedProcess[str], Path], shop: ShopServer
) -> None:
    done, _ = go_run
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"go test failed:\n{output}\n{shop.log_tail()}"
    assert "--- SKIP" not in output, f"a Go test was skipped:\n{output}"
    for name in (
        "TestGolden",
        "TestBacklog",
        "TestShop/client",
        "TestShop/client/empty_PlaceOrder_is_INVALID_ARGUMENT_with_BadRequest_items",
        "TestShop/client/unknown_GetOrder_is_NOT_FOUND_with_ErrorInfo_ORDER_NOT_FOUND",
        "TestShop/client/second_CancelOrder_is_FAILED_PRECONDITION"
        "_with_ErrorInfo_ORDER_ALREADY_CANCELLED",
        "TestShop/consumer",
        "TestShopOverConnect/connect+proto",
        "TestShopOverConnect/connect+json",
        "TestShopOverConnect/grpc-web",
        "TestStreams/unary_PlaceOrder_answers_the_new_order_id",
        "TestStreams/client_stream_ImportOrders_places_every_order_and_answers_their_ids",
        "TestStreams/client_stream_ImportOrders_with_an_invalid_order_is_INVALID_ARGUMENT"
        "_and_places_none",
        "TestStreams/server_stream_ListOrders_streams_the_placed_and_imported_orders_in_order",
        "TestStreams/bidi_WatchOrders_answers_the_status_then_each_change",
        "TestStreams/bidi_WatchOrders_of_an_unknown_order_is_NOT_FOUND_with_ErrorInfo"
        "_ORDER_NOT_FOUND",
        "TestEventStyles",
        "TestCheckout/an_order_under_the_payment_limit_is_PAID",
        "TestCheckout/an_order_over_the_payment_limit_is_CANCELLED",
        "TestCheckout/an_order_nobody_pays_is_CANCELLED_after_the_payment_timeout",
        "TestCheckout/on_Kafka_the_saga's_CapturePayment_and_the_payments'_answers"
        "_travel_as_CloudEvents",
    ):
        assert f"--- PASS: {name} " in output, f"{name} did not pass:\n{output}"


def test_the_checkout_saga_keeps_the_paid_orders_stock_and_releases_the_cancelled_ones(
    go_run: tuple[subprocess.CompletedProcess[str], Path],
    shop: ShopServer,
    shop_without_payments: ShopServer,
) -> None:
    done, out = go_run
    assert (out / "checkout.json").exists(), f"Go wrote no checkout.json:\n{done.stdout}"
    orders = json.loads((out / "checkout.json").read_text())
    assert orders["sku"] == CHECKOUT_SKU
    paid = CHECKOUT_STOCK - orders["paid_quantity"]
    reserved = ("reserve stock", "action", "succeeded")
    released = ("reserve stock", "compensation", "succeeded")

    # the paid order keeps its reservation
    status, history = checkout_of(shop, orders["paid_order_id"])
    assert (status, released in history) == ("completed", False), history
    assert stock_of(shop, orders["paid_order_id"]) == (
        paid,
        [(CHECKOUT_SKU, orders["paid_quantity"])],
    ), shop.log_tail()
    # the declined one reserved, then released: none of its stock is taken
    status, history = checkout_of(shop, orders["declined_order_id"])
    assert status == "compensated", history
    assert {reserved, ("capture payment", "action", "failed"), released} <= history
    assert stock_of(shop, orders["declined_order_id"]) == (paid, []), shop.log_tail()
    # the timed-out order's stock came back: all of it is available again
    status, history = checkout_of(shop_without_payments, orders["timed_out_order_id"])
    assert status == "compensated", history
    assert {reserved, ("capture payment", "action", "timed out"), released} <= history
    timed_out = stock_of(shop_without_payments, orders["timed_out_order_id"])
    assert timed_out == (CHECKOUT_STOCK, []), shop_without_payments.log_tail()


def test_python_decodes_the_bytes_go_wrote(
    go_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    done, out = go_run
    manifest = json.loads((GOLDEN / "manifest.json").read_text())
    pool = descriptor_pool.Default()
    for entry in manifest:
        written_path = out / entry["file"]
        assert written_path.exists(), f"Go did not write {entry['file']}:\n{done.stdout}"
        cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(entry["type"]))
        written = written_path.read_bytes()
        golden = (GOLDEN / entry["file"]).read_bytes()
        from_go = cls.FromString(written)
        assert from_go == cls.FromString(golden), entry["file"]
        assert json_format.MessageToDict(from_go) == entry["json"], entry["file"]
        assert from_go.SerializeToString(deterministic=True) == written, entry["file"]
        assert written == golden, entry["file"]


def test_go_code_is_gofmt_and_vet_clean(generated: Path) -> None:
    fmt = run(["gofmt", "-l", "."], cwd=GO_MODULE, timeout=60)
    assert fmt.stdout == "", f"not gofmt-formatted: {fmt.stdout}"
    run(["go", "vet", "./..."], cwd=GO_MODULE, timeout=600)


def grpcurl_json(
    grpcurl: Path, shop: ShopServer, method: str, request: dict[str, object]
) -> dict[str, object]:
    args = [str(grpcurl), "-plaintext", "-d", json.dumps(request), shop.address, method]
    done = run(args, timeout=60, shop=shop)
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


def test_grpcurl_lists_and_calls_by_reflection(shop: ShopServer, go_tools: dict[str, Path]) -> None:
    grpcurl = go_tools["grpcurl"]
    listed = run([str(grpcurl), "-plaintext", shop.address, "list"], timeout=60, shop=shop)
    assert "shop.orders.v1.OrderService" in listed.stdout.split(), listed.stdout

    placed = grpcurl_json(
        grpcurl,
        shop,
        "shop.orders.v1.OrderService/PlaceOrder",
        {"customerId": "x", "items": [{"sku": "a", "quantity": 1, "priceCents": "5"}]},
    )
    order_id = placed["orderId"]
    assert isinstance(order_id, str)
    assert order_id

    order = grpcurl_json(
        grpcurl, shop, "shop.orders.v1.OrderService/GetOrder", {"orderId": order_id}
    )
    assert order["orderId"] == order_id
    assert order["customerId"] == "x"
    assert order["totalCents"] == "5"


def test_go_client_calls_the_gateway_over_mutual_tls(generated: Path, tmp_path: Path) -> None:
    """grpc-go with ``credentials.NewTLS``: with the client certificate it places an order and
    reads it back; without one it is refused (UNAVAILABLE). See ``go/tls_test.go``."""
    pki = PKI.make(tmp_path)
    with serve_with_tls(pki, tmp_path) as server:
        done = run_tool(
            ["go", "test", "-run", TLS_TEST, "-count=1", "-v", "-timeout=2m", "."],
            cwd=GO_MODULE,
            env=go_environ(**pki.env(server)),
            timeout=600,
            shop=server,
            merge_stderr=True,
        )
    for name in (
        "TestGatewayTLS/with_a_client_certificate_an_order_is_placed_and_read_back",
        "TestGatewayTLS/without_a_client_certificate_the_call_is_UNAVAILABLE",
    ):
        assert f"--- PASS: {name} " in done.stdout, f"{name} did not pass:\n{done.stdout}"
