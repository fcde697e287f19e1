"""TypeScript/Node services interoperate with wirebus (tests/crosslang/ts).

The Node side (protobuf-es v2, Connect's gRPC transport, kafkajs) proves that
1. the golden files Python wrote decode, compare equal to manifest.json and
   re-encode to the same bytes;
2. a gRPC client can place, read (until PAID), list and cancel orders on
   ``wirebus run examples.shop.app:app`` and read the google.rpc error details;
3. a Kafka consumer finds OrderPlaced and PaymentCaptured of that order with
   their CloudEvents headers and decodes the bare values;
4. the same consumer waits through a backlog (``tests/crosslang/backlog.py``) for
   every wanted type of one order.

This driver installs the Node packages (``npm ci``), generates the TypeScript
code (``scripts/gen-ts tests/crosslang/ts/gen``: ``buf.gen.ts.yaml`` plus the
google.rpc error details, offline), starts the shop on
the real Kafka of ``scripts/services`` as group ``shop-crosslang-ts``
(``shop_server`` in conftest.py) and runs ``node --test`` against it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.crosslang.conftest import (
    ROOT,
    VENV_BIN,
    BacklogFactory,
    ShopServer,
    ShopServerFactory,
    run_tool,
    tool_env,
)

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

TS = ROOT / "tests" / "crosslang" / "ts"
STAMP = TS / "node_modules" / ".wirebus-installed"


def run(
    args: list[str], cwd: Path, timeout: float, shop: ShopServer | None = None, **env: str
) -> str:
    """Run a command with npm's cache in .cache/npm; its output (stderr interleaved)."""
    node_env = tool_env(
        npm_config_cache=str(ROOT / ".cache" / "npm"),
        npm_config_update_notifier="false",
        npm_config_fund="false",
        npm_config_audit="false",
        **env,
    )
    done = run_tool(args, cwd=cwd, env=node_env, timeout=timeout, shop=shop, merge_stderr=True)
    return done.stdout


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
    # as the README shows: protoc-gen-es of the project on PATH, the output named
    dirs = (TS / "node_modules" / ".bin", VENV_BIN, os.environ.get("PATH", ""))
    plugins = os.pathsep.join(map(str, dirs))
    run([str(ROOT / "scripts" / "gen-ts"), str(TS / "gen")], ROOT, timeout=120, PATH=plugins)
    for generated in ("shop/orders/v1/orders_pb.ts", "google/rpc/error_details_pb.ts"):
        assert (TS / "gen" / generated).is_file(), f"buf generate did not write gen/{generated}"
    return TS


@pytest.fixture
def shop(shop_server: ShopServerFactory) -> Iterator[ShopServer]:
    with shop_server("shop-crosslang-ts") as server:
        yield server


def node_test(project: Path, script: str, shop: ShopServer | None = None, **env: str) -> str:
    out = run(["npm", "run", "--silent", script], project, timeout=240, shop=shop, **env)
    assert "# SKIP" not in out, f"some TypeScript tests were skipped:\n{out}"
    assert "\n# fail 0" in out, out
    return out


def test_typescript_typechecks_and_reads_the_golden_files(ts_project: Path) -> None:
    run(["npm", "run", "--silent", "typecheck"], ts_project, timeout=120)
    node_test(ts_project, "test:golden")


def test_typescript_client_and_kafka_consumer_talk_to_the_shop(
    ts_project: Path, shop: ShopServer, kafka_bootstrap: str, seeded_backlog: BacklogFactory
) -> None:
    out = node_test(
        ts_project,
        "test:shop",
        shop,
        WIREBUS_GRPC_ADDRESS=shop.address,
        WIREBUS_KAFKA_BOOTSTRAP=kafka_bootstrap,
        WIREBUS_READER_GROUP=shop.reader_group,
        **seeded_backlog("crosslang-ts").env(),
    )
    assert "ok 1 - waits for every wanted type of its order" in out, out


def test_typescript_connect_clients_call_the_shops_connect_port(
    ts_project: Path, shop: ShopServer
) -> None:
    out = node_test(ts_project, "test:connect", shop, WIREBUS_CONNECT_URL=shop.connect_url)
    assert "\n# pass 3" in out, out
