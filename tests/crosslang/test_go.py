"""Go interoperates with wirebus: golden bytes, a grpc-go client, a franz-go consumer, grpcurl.

The Go side is the module in ``tests/crosslang/go`` (see its README.md). This
driver installs the Go protoc plugins and grpcurl into ``.cache/go/bin``,
generates Go code with ``buf generate --template buf.gen.go.yaml`` into
``gen/go``, starts ``wirebus run examples.shop.app:app`` on the real Kafka of
``scripts/services``, runs ``go test`` against it, decodes the bytes Go wrote
with the Python classes, and calls the gateway by reflection with grpcurl.
Everything Go downloads or builds is cached under ``.cache/go``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from shop.orders.v1 import orders_pb2  # noqa: F401  (registers the types by name)
from shop.payments.v1 import payments_pb2  # noqa: F401

if shutil.which("go") is None:
    pytest.skip(
        "the Go cross-language suite needs the go toolchain, and `go` is not on PATH",
        allow_module_level=True,
    )

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GO_MODULE = ROOT / "tests" / "crosslang" / "go"
GOLDEN = ROOT / "tests" / "golden"
GEN_GO = ROOT / "gen" / "go"
GO_CACHE = ROOT / ".cache" / "go"
GOBIN = GO_CACHE / "bin"

# Pinned tools, installed with `go install` (skipped when the binary already has this version).
TOOLS = {
    "protoc-gen-go": ("google.golang.org/protobuf/cmd/protoc-gen-go", "v1.36.12"),
    "protoc-gen-go-grpc": ("google.golang.org/grpc/cmd/protoc-gen-go-grpc", "v1.6.2"),
    "grpcurl": ("github.com/fullstorydev/grpcurl/cmd/grpcurl", "v1.9.4"),
}
# `wirebus run` consumes as the group named after the app, "shop". Any other shop on this
# Kafka (a demo, another test session) joins that group too, and Kafka splits the partitions
# between the processes, each with its own order store: then this gateway may never
# see the PaymentCaptured of its own order. So the driver gives the shop a consumer group of
# its own by renaming the app before the unchanged `python -m wirebus run` loads it (ce_source
# stays "shop"). The group is stable, so its committed offsets spare each run the history.
SHOP_GROUP = "shop-crosslang-go"
RUN_WIREBUS_AS = (
    "import runpy, sys; from examples.shop.app import app; app.name = sys.argv.pop(1); "
    "runpy.run_module('wirebus', run_name='__main__', alter_sys=True)"
)
# The one-line module that makes the generated code importable through the
# `replace` in tests/crosslang/go/go.mod (gen/ is git-ignored and buf cleans it).
GEN_GO_MOD = "module github.com/wirebus/wirebus/gen/go\n\ngo 1.24\n"


def go_environ() -> dict[str, str]:
    env = {
        **os.environ,
        "GOPATH": str(GO_CACHE),
        "GOMODCACHE": str(GO_CACHE / "mod"),
        "GOCACHE": str(GO_CACHE / "build"),
        "GOBIN": str(GOBIN),
        "GOFLAGS": "-modcacherw -buildvcs=false",
        "PATH": os.pathsep.join(
            [str(ROOT / ".venv" / "bin"), str(GOBIN), os.environ.get("PATH", "")]
        ),
    }
    env.pop("GOWORK", None)
    return env


def run(
    args: list[str], *, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=cwd,
        env=env or go_environ(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def installed_version(binary: Path) -> str | None:
    """The module version `go version -m` reports for a binary (None if it is missing)."""
    if not binary.exists():
        return None
    info = run(["go", "version", "-m", str(binary)], timeout=60)
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
            done = run(["go", "install", f"{package}@{version}"], timeout=900)
            assert done.returncode == 0, f"go install {package}@{version}:\n{done.stderr}"
        paths[name] = binary
    return paths


@pytest.fixture(scope="module")
def generated(go_tools: dict[str, Path]) -> Path:
    """Go code generated from proto/ into gen/go, made a module."""
    done = run(["buf", "generate", "--template", "buf.gen.go.yaml"], timeout=300)
    assert done.returncode == 0, f"buf generate --template buf.gen.go.yaml:\n{done.stderr}"
    (GEN_GO / "go.mod").write_text(GEN_GO_MOD)
    assert (GEN_GO / "shop" / "orders" / "v1" / "orders_grpc.pb.go").exists()
    return GEN_GO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_serving(address: str, proc: subprocess.Popen[bytes], log: Path, within: float) -> None:
    deadline = time.monotonic() + within
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            assert proc.poll() is None, f"wirebus run exited early:\n{log.read_text()}"
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, f"not SERVING in {within:g}s:\n{log.read_text()}"
            time.sleep(0.1)


@dataclasses.dataclass(frozen=True)
class Shop:
    address: str
    log: Path

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join([f"--- last lines of {self.log}", *text])


@pytest.fixture(scope="module")
def shop(
    services: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Shop]:
    """`wirebus run examples.shop.app:app` on Kafka. Stopped with SIGTERM: exit code 0."""
    tmp = tmp_path_factory.mktemp("shop")
    pythonpath = [str(ROOT / "gen" / "python"), str(ROOT), os.environ.get("PYTHONPATH", "")]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, pythonpath)),
        "WIREBUS_KAFKA_BOOTSTRAP": services["WIREBUS_KAFKA_BOOTSTRAP"],
        "WIREBUS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/inbox.db",
    }
    port = free_port()
    # = python -m wirebus run examples.shop.app:app --port PORT, consuming as SHOP_GROUP
    command = [sys.executable, "-c", RUN_WIREBUS_AS, SHOP_GROUP, "run", "examples.shop.app:app"]
    log = tmp / "wirebus.log"
    with log.open("wb") as err:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [*command, "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    address = f"127.0.0.1:{port}"
    try:
        wait_serving(address, proc, log, within=60)
        yield Shop(address, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(10)
    assert code == 0, f"wirebus run exited {code} on SIGTERM:\n{log.read_text()}"


@pytest.fixture(scope="module")
def go_run(
    generated: Path,
    shop: Shop,
    services: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """`go test ./... -count=1 -v` against the shop; its result and the bytes Go wrote."""
    out = tmp_path_factory.mktemp("go-out")
    env = {
        **go_environ(),
        "WIREBUS_GOLDEN_DIR": str(GOLDEN),
        "WIREBUS_GO_OUT": str(out),
        "WIREBUS_GRPC_ADDR": shop.address,
        "WIREBUS_KAFKA_BOOTSTRAP": services["WIREBUS_KAFKA_BOOTSTRAP"],
    }
    done = run(
        ["go", "test", "./...", "-count=1", "-v", "-timeout=5m"],
        cwd=GO_MODULE,
        env=env,
        timeout=900,
    )
    return done, out


def test_go_tests_pass_against_the_shop(
    go_run: tuple[subprocess.CompletedProcess[str], Path], shop: Shop
) -> None:
    done, _ = go_run
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"go test failed:\n{output}\n{shop.log_tail()}"
    assert "--- SKIP" not in output, f"a Go test was skipped:\n{output}"
    for name in (
        "TestGolden",
        "TestShop/client",
        "TestShop/client/empty_PlaceOrder_is_INVALID_ARGUMENT_with_BadRequest_items",
        "TestShop/client/unknown_GetOrder_is_NOT_FOUND_with_ErrorInfo_ORDER_NOT_FOUND",
        "TestShop/client/second_CancelOrder_is_FAILED_PRECONDITION"
        "_with_ErrorInfo_ORDER_ALREADY_CANCELLED",
        "TestShop/consumer",
    ):
        assert f"--- PASS: {name} " in output, f"{name} did not pass:\n{output}"


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
    assert fmt.returncode == 0, fmt.stderr
    assert fmt.stdout == "", f"not gofmt-formatted: {fmt.stdout}"
    vet = run(["go", "vet", "./..."], cwd=GO_MODULE, timeout=600)
    assert vet.returncode == 0, f"go vet:\n{vet.stderr}"


def grpcurl_json(
    grpcurl: Path, shop: Shop, method: str, request: dict[str, object]
) -> dict[str, object]:
    done = run(
        [str(grpcurl), "-plaintext", "-d", json.dumps(request), shop.address, method], timeout=60
    )
    assert done.returncode == 0, f"grpcurl {method}: {done.stderr}\n{shop.log_tail()}"
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


def test_grpcurl_lists_and_calls_by_reflection(shop: Shop, go_tools: dict[str, Path]) -> None:
    grpcurl = go_tools["grpcurl"]
    listed = run([str(grpcurl), "-plaintext", shop.address, "list"], timeout=60)
    assert listed.returncode == 0, listed.stderr
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
