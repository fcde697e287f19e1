"""``wirebus new NAME``: a new user's project, from a plain virtualenv to a served app.

In a venv with ``pip install 'wirebus[codegen,testing]'`` of this checkout and
nothing else (``tests/venvs.py``), and only its ``bin`` on PATH: ``wirebus
new``, then the commands its README shows, as written: ``buf generate``,
``pytest``, ``wirebus serve app:app`` and a ``buf curl`` call.
"""

from __future__ import annotations

import json
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


@pytest.fixture(scope="module")
def venv() -> Path:
    return installed_venv("codegen,testing")


def run(venv: Path, cwd: Path, *command: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        list(command), cwd=cwd, env=clean_env(venv), capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def project(venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``wirebus new inventory`` in an empty directory, then ``buf generate``."""
    home = tmp_path_factory.mktemp("home")
    run(venv, home, "wirebus", "new", "inventory")
    run(venv, home / "inventory", "buf", "generate")
    return home / "inventory"


def test_new_says_what_to_run_next_and_no_install_when_the_extras_are_there(
    venv: Path, tmp_path: Path
) -> None:
    done = run(venv, tmp_path, "wirebus", "new", "inventory")

    assert done.stdout.splitlines()[1:] == [
        "next: cd inventory && buf generate && pytest -q && wirebus run app:app"
    ]


def test_new_in_a_plain_install_says_to_install_the_extras_first(tmp_path: Path) -> None:
    done = run(installed_venv(""), tmp_path, "wirebus", "new", "inventory")

    first = done.stdout.splitlines()[1]
    # grpc_tools and pytest are the plain venv's own; buf may be found on PATH outside it
    assert first.startswith("first: pip install 'wirebus[codegen,testing]' (")
    assert "grpc_tools" in first
    assert "pytest" in first


def test_a_new_project_run_before_buf_generate_says_to_run_it_and_not_to_set_pythonpath(
    venv: Path, tmp_path: Path
) -> None:
    run(venv, tmp_path, "wirebus", "new", "inventory")
    done = subprocess.run(
        ["wirebus", "run", "app:app", "--port", "0"], cwd=tmp_path / "inventory",
        env=clean_env(venv), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert done.returncode == 2
    [error] = [line for line in done.stderr.splitlines() if line.startswith("Error")]
    assert error == (
        "Error: cannot import 'app': generated module 'inventory' is missing: run `buf generate`"
        " (wirebus finds gen/python through buf.gen.yaml;"
        " python alone needs gen/python on PYTHONPATH)"
    )


def test_new_writes_a_proto_buf_templates_an_app_its_test_and_a_readme(project: Path) -> None:
    files = {str(p.relative_to(project)) for p in project.rglob("*") if p.is_file()}
    written = {f for f in files if not f.startswith("gen/")}

    assert written == {
        ".gitignore",
        "README.md",
        "app.py",
        "buf.gen.yaml",
        "buf.yaml",
        "proto/inventory/v1/inventory.proto",
        "pyproject.toml",
        "tests/test_app.py",
    }
    assert "gen/python/inventory/v1/inventory_pb2_grpc.py" in files  # buf generate, offline


def test_the_new_projects_proto_passes_buf_lint(venv: Path, project: Path) -> None:
    run(venv, project, "buf", "lint")


def test_the_new_projects_tests_pass(venv: Path, project: Path) -> None:
    done = run(venv, project, "pytest", "-q", "-p", "no:cacheprovider")

    assert "2 passed" in done.stdout


def test_the_new_projects_tests_without_pytest_asyncio_say_so_in_one_line(
    venv: Path, project: Path
) -> None:
    done = subprocess.run(
        ["pytest", "-q", "-p", "no:cacheprovider", "-p", "no:asyncio"], cwd=project,
        env=clean_env(venv), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert done.returncode != 0
    assert done.stderr.strip() == "ERROR: Missing required plugins: pytest-asyncio"


def test_new_refuses_a_directory_that_is_not_empty(venv: Path, project: Path) -> None:
    done = subprocess.run(
        ["wirebus", "new", "inventory", "--dir", str(project)], env=clean_env(venv),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"Error: {project} exists and is not empty: choose another --dir"
    ]


@pytest.mark.parametrize("name", ["json", "app", "Inventory", "9lives"])
def test_new_refuses_a_name_that_cannot_be_a_module_of_its_own(venv: Path, name: str) -> None:
    done = subprocess.run(
        ["wirebus", "new", name, "--dir", "/nonexistent/x"], env=clean_env(venv),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert done.returncode == 1
    assert done.stderr.startswith(f"Error: project name {name!r}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(venv: Path, project: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        ["wirebus", "serve", "app:app", "--port", str(port)], cwd=project, env=clean_env(venv),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    address = f"127.0.0.1:{port}"
    try:
        wait_serving(address, proc)
        yield address
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr


def wait_serving(address: str, proc: subprocess.Popen[str], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, "not SERVING in time"
            time.sleep(0.1)


def test_the_new_project_serves_its_command_over_grpc(
    venv: Path, project: Path, served: str
) -> None:
    method = f"http://{served}/inventory.v1.InventoryService/AddItem"
    body = json.dumps({"name": "pen", "quantity": 3})
    done = run(
        venv, project, "buf", "curl", "--protocol", "grpc", "--http2-prior-knowledge",
        "-d", body, method,
    )  # fmt: skip

    assert json.loads(done.stdout)["itemId"]
