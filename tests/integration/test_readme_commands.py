"""The README's commands that need Kafka, PostgreSQL or other languages' toolchains run
as written (``<!-- docs-test: NAME -->`` blocks; the checked copy is
``tests/readme_blocks.py``'s: a fresh database, unique groups, a free port)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import uuid

import pytest

from tests.readme_blocks import ROOT, Substitutions, blocks, checked_script

VENV_BIN = ROOT / ".venv" / "bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def project_shell(**extra: str) -> dict[str, str]:
    """A shell with the project's venv active; this checkout's src first (a worktree's
    .venv may hold another checkout's editable wirebus); no generated code on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WIREBUS_", "PYTHON"))}
    env["PATH"] = os.pathsep.join([str(VENV_BIN), env.get("PATH", "")])
    env["PYTHONPATH"] = str(ROOT / "src")
    env.update(extra)
    return env


async def run_script(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = await asyncio.to_thread(
        subprocess.run, ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=600, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{script}\n--- stdout:\n{done.stdout}\n--- stderr:\n{done.stderr}"
    return done


async def test_the_kafka_commands_and_the_standard_tools_run_as_the_readme_shows(
    services: dict[str, str], pg_url: str
) -> None:
    if shutil.which("kcat") is None:
        pytest.skip("kcat is not installed (scripts/services start installs it)")
    subs = Substitutions(port=free_port(), unique=uuid.uuid4().hex[:8], database_url=pg_url)
    script = checked_script(blocks()["kafka"].text + blocks()["tools"].text, subs)
    script = script.replace("127.0.0.1:9092", services["WIREBUS_KAFKA_BOOTSTRAP"])

    done = await run_script(script, project_shell(WIREBUS_KEEP_SERVICES="1"))

    assert "shop.orders.v1.OrderService/PlaceOrder" in done.stdout  # buf curl --list-methods
    assert "record(s) from shop.orders.v1.dlq (dry run)" in done.stdout  # dlq replay --dry-run
    assert done.stderr == ""  # no aiokafka lines from dlq replay, no kcat chatter


async def test_the_other_languages_code_is_generated_as_the_readme_shows() -> None:
    missing = [tool for tool in ("go", "npm", "mvn") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: the Go/TypeScript/Java generation")
    script = checked_script(blocks()["codegen"].text, Substitutions(port=free_port()))
    go = ROOT / ".cache" / "go"
    env = project_shell(
        GOPATH=str(go), GOMODCACHE=str(go / "mod"), GOCACHE=str(go / "build"),
        GOFLAGS="-modcacherw -buildvcs=false", npm_config_cache=str(ROOT / ".cache" / "npm"),
    )  # fmt: skip
    env.pop("GOBIN", None)

    await run_script(script, env)

    for generated in (
        "gen/go/shop/orders/v1/orders_grpc.pb.go",
        "gen/ts/shop/orders/v1/orders_pb.ts",
        "gen/ts/google/rpc/error_details_pb.ts",
        "tests/crosslang/java/target/generated-sources/buf/dev/wirebus/shop/orders/v1/OrderServiceGrpc.java",
    ):
        assert (ROOT / generated).is_file(), generated
