"""TypeScript/Node services interoperate with wirebus (tests/crosslang/ts).

The Node side (protobuf-es v2, Connect's gRPC transport, kafkajs) proves that
1. the golden files Python wrote decode, compare equal to manifest.json and
   re-encode to the same bytes;
2. a gRPC client can place, read (until PAID), list and cancel orders on
   ``wirebus run examples.shop.app:app`` and read the google.rpc error details;
3. a Kafka consumer finds OrderPlaced and PaymentCaptured of that order with
   their CloudEvents headers and decodes the bare values.

This driver installs the Node packages (``npm ci``), generates the TypeScript
code (``buf generate --template buf.gen.ts.yaml``, offline), starts the shop on
the real Kafka of ``scripts/services`` and runs ``node --test`` against it.
"""

from __future__ import annotations

import hashlib
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
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.integration.conftest import services  # noqa: F401

pytestmark = pytest.mark.integration


def node_major() -> int:
    """The major version of the ``node`` on PATH, 0 if there is none (or no npm)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return 0
    version = subprocess.run(
        ["node", "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout.strip()  # v20.20.2
    major = version.lstrip("v").split(".")[0]
    return int(major) if major.isdigit() else 0


if node_major() < 20:
    pytest.skip(
        "Node.js 20+ with npm is not installed: TypeScript cross-language tests skipped",
        allow_module_level=True,
    )

ROOT = Path(__file__).resolve().parents[2]
TS = ROOT / "tests" / "crosslang" / "ts"
BUF = ROOT / ".venv" / "bin" / "buf"
STAMP = TS / "node_modules" / ".wirebus-installed"
PYTHONPATH = f"{ROOT / 'gen' / 'python'}{os.pathsep}{ROOT}"
# `wirebus run` consumes as the consumer group named after the app ("shop"), shared by every
# other `wirebus run` of the shop on the same Kafka: when two run at once, the PaymentCaptured
# that marks our order PAID may be handled by the other process.  So the driver runs the same
# CLI with only the default group changed (app name, ce_source and ErrorInfo domain stay "shop").
GROUP = "shop-crosslang-ts"
RUN_WITH_GROUP = (
    "import functools, runpy, sys; from wirebus.runtime import Runtime; "
    "Runtime.__init__ = functools.partialmethod(Runtime.__init__, group=sys.argv.pop(1)); "
    "runpy.run_module('wirebus', run_name='__main__', alter_sys=True)"
)


def node_env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "npm_config_cache": str(ROOT / ".cache" / "npm"),
        "npm_config_update_notifier": "false",
        "npm_config_fund": "false",
        "npm_config_audit": "false",
        **extra,
    }


def run(args: list[str], cwd: Path, timeout: float, log: Path | None = None, **env: str) -> str:
    """Run a command; fail the test with its whole output (and ``log``) unless it exits 0."""
    try:
        done = subprocess.run(
            args,
            cwd=cwd,
            env=node_env(**env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else exc.output
        pytest.fail(f"{' '.join(args)} timed out after {timeout} s:\n{out or ''}{tail(log)}")
    if done.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}{tail(log)}")
    return done.stdout


def tail(log: Path | None, lines: int = 80) -> str:
    """The end of the server's log, to show next to a failure."""
    if log is None or not log.is_file():
        return ""
    text = "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    return f"\n--- end of {log.name}:\n{text}"


def lock_digest() -> str:
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        digest.update((TS / name).read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def ts_project() -> Path:
    """tests/crosslang/ts with its packages installed and its code generated."""
    if not (STAMP.is_file() and STAMP.read_text() == lock_digest()):
        run(["npm", "ci", "--no-audit", "--no-fund"], TS, timeout=600)
        STAMP.write_text(lock_digest())
    run([str(BUF), "generate", "--template", "buf.gen.ts.yaml"], ROOT, timeout=120)
    for generated in ("shop/orders/v1/orders_pb.ts", "google/rpc/error_details_pb.ts"):
        assert (TS / "gen" / generated).is_file(), f"buf generate did not write gen/{generated}"
    return TS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_serving(port: int, proc: subprocess.Popen[bytes], log: Path, within: float) -> None:
    """Wait until the gateway's gRPC health check answers SERVING."""
    deadline = time.monotonic() + within
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"wirebus run exited {proc.returncode}:\n{log.read_text()}")
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    pytest.fail(f"wirebus run was not SERVING within {within} s:\n{log.read_text()}")


@pytest.fixture
def shop(services: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, Path]]:  # noqa: F811
    """``wirebus run examples.shop.app:app`` on Kafka (group ``GROUP``); yields address and log."""
    port = free_port()
    log = tmp_path / "shop.log"
    env = {
        **os.environ,
        "PYTHONPATH": PYTHONPATH,
        "WIREBUS_KAFKA_BOOTSTRAP": services["WIREBUS_KAFKA_BOOTSTRAP"],
        "WIREBUS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/inbox.db",
    }
    run_shop = ["run", "examples.shop.app:app", "--port", str(port)]
    with log.open("wb") as err:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [sys.executable, "-c", RUN_WITH_GROUP, GROUP, *run_shop],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        wait_serving(port, proc, log, within=60)
        yield f"127.0.0.1:{port}", log
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, f"wirebus run exited {proc.returncode}:\n{log.read_text()}"


def node_test(project: Path, script: str, log: Path | None = None, **env: str) -> str:
    out = run(["npm", "run", "--silent", script], project, timeout=240, log=log, **env)
    assert "# SKIP" not in out, f"some TypeScript tests were skipped:\n{out}"
    assert "\n# fail 0" in out, out
    return out


def test_typescript_typechecks_and_reads_the_golden_files(ts_project: Path) -> None:
    run(["npm", "run", "--silent", "typecheck"], ts_project, timeout=120)
    node_test(ts_project, "test:golden")


def test_typescript_client_and_kafka_consumer_talk_to_the_shop(
    ts_project: Path,
    shop: tuple[str, Path],
    services: dict[str, str],  # noqa: F811
) -> None:
    address, log = shop
    node_test(
        ts_project,
        "test:shop",
        log,
        WIREBUS_GRPC_ADDRESS=address,
        WIREBUS_KAFKA_BOOTSTRAP=services["WIREBUS_KAFKA_BOOTSTRAP"],
    )
