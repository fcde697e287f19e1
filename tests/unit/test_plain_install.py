"""``pip install wirebus`` (no extras) serves an app on the embedded defaults, and a
feature whose extra is missing is one ``Error:`` line naming the extra.

It crashed in ``settings.py`` with ``No module named 'sqlalchemy'`` even for
SQLite, and ``--metrics-port`` or ``WIREBUS_KAFKA_BOOTSTRAP`` without their
extras were tracebacks. The venv is a real one (``tests/venvs.py``), cached
under ``.cache/venvs``.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.venvs import clean_env, installed_venv

pytestmark = pytest.mark.slow

TINY_APP = """\
from wirebus import App, Router

router = Router("tiny")
app = App(name="tiny", services=[], routers=[router])
"""


@pytest.fixture(scope="module")
def venv() -> Path:
    return installed_venv("")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "tiny.py").write_text(TINY_APP, encoding="utf-8")
    return tmp_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wirebus(venv: Path, project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "wirebus"), *args],
        cwd=project,
        env=clean_env(venv, **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("module", ["aiokafka", "prometheus_client", "asyncpg", "grpc_tools"])
def test_a_plain_install_has_none_of_the_extras(venv: Path, module: str) -> None:
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c", f"import {module}"],
        env=clean_env(venv),
        capture_output=True,
        check=False,
    )
    assert probe.returncode != 0, f"{module} is installed without its extra"


@pytest.fixture
def served(venv: Path, project: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [str(venv / "bin" / "wirebus"), "serve", "tiny:app", "--port", str(port)],
        cwd=project,
        env=clean_env(venv),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stderr
        assert "Traceback" not in stderr


def health_status(address: str, within: float = 30.0) -> int:
    """The gateway's overall health once it answers, bounded."""
    deadline = time.monotonic() + within
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                return int(health.Check(health_pb2.HealthCheckRequest(), timeout=2).status)
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def test_a_plain_install_serves_an_app_on_the_embedded_defaults(served: str) -> None:
    assert health_status(served) == health_pb2.HealthCheckResponse.SERVING


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_metrics_without_prometheus_client_is_one_line_naming_the_extra(
    venv: Path, project: Path
) -> None:
    result = wirebus(venv, project, "serve", "tiny:app", "--port", "0", "--metrics-port", "9464")

    assert result.returncode == 1
    assert one_error_line(result) == (
        "Error: serving metrics (--metrics-port) needs the metrics extra"
        " (prometheus_client is not installed): pip install 'wirebus[metrics]'"
    )


@pytest.mark.parametrize(
    "command",
    [
        ("serve", "tiny:app", "--port", "0"),
        ("run", "tiny:app", "--port", "0"),
        ("relay", "tiny:app"),
        ("dlq", "replay", "--topic", "t.dlq"),
    ],
)
def test_kafka_without_aiokafka_is_one_line_naming_the_extra(
    venv: Path, project: Path, command: tuple[str, ...]
) -> None:
    result = wirebus(venv, project, *command, WIREBUS_KAFKA_BOOTSTRAP="127.0.0.1:9092")

    assert result.returncode == 1
    error = one_error_line(result)
    assert error.endswith(
        "needs the kafka extra (aiokafka is not installed): pip install 'wirebus[kafka]'"
    )
