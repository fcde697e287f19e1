"""What a new user meets first: generated code found without PYTHONPATH, one-line
errors for Kafka down or an extra missing, and a quiet start."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

from wirebus._cli_logging import StartupNoiseFilter

ROOT = Path(__file__).resolve().parents[2]
# Embedded defaults, this checkout's src, and no generated code on PYTHONPATH.
ENV = {k: v for k, v in os.environ.items() if not k.startswith("WIREBUS_")}
ENV["PYTHONPATH"] = str(ROOT / "src")


def wirebus(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wirebus", *args],
        cwd=cwd,
        env={**ENV, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in result.stderr, result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith("Error")]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_generated_code_of_buf_gen_yaml_is_found_without_pythonpath():
    result = wirebus("describe", "examples.shop.app:app")

    assert result.returncode == 0, result.stderr
    assert "/shop.orders.v1.OrderService/PlaceOrder" in result.stdout


def test_the_generated_code_is_found_from_the_app_dir_too(tmp_path):
    result = wirebus("describe", "examples.shop.app:app", "--app-dir", str(ROOT), cwd=tmp_path)

    assert result.returncode == 0, result.stderr


def test_consume_with_kafka_unreachable_says_it_cannot_consume(tmp_path):
    """It said "publishing to '*' failed" (the dead-letter publisher starts first)."""
    bootstrap = f"127.0.0.1:{closed_port()}"
    result = wirebus(
        "consume", "examples.shop.app:app", "--group", "g", "--app-dir", str(ROOT),
        cwd=tmp_path, WIREBUS_KAFKA_BOOTSTRAP=bootstrap,
    )  # fmt: skip

    assert result.returncode == 1
    [error] = error_lines(result)
    assert error.startswith(
        f"Error: cannot consume: Kafka is unreachable: cannot connect to {bootstrap}"
    )
    assert "publishing" not in error


def test_dlq_replay_with_kafka_unreachable_says_it_cannot_replay(tmp_path):
    bootstrap = f"127.0.0.1:{closed_port()}"
    result = wirebus(
        "dlq", "replay", "--topic", "t.dlq", "--dry-run", cwd=tmp_path,
        WIREBUS_KAFKA_BOOTSTRAP=bootstrap,
    )  # fmt: skip

    assert result.returncode == 1
    [error] = error_lines(result)
    assert error.startswith(
        f"Error: cannot replay: Kafka is unreachable: cannot connect to {bootstrap}"
    )


def test_a_postgres_url_without_asyncpg_names_the_extra(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\nsys.modules['asyncpg'] = None  # as if wirebus[postgres] were not installed\n"
    )
    result = wirebus(
        "outbox", "status", cwd=tmp_path,
        PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT / 'src'}",
        WIREBUS_DATABASE_URL="postgresql+asyncpg://u:p@127.0.0.1:1/db",
    )  # fmt: skip

    assert result.returncode == 1
    assert error_lines(result) == [
        "Error: WIREBUS_DATABASE_URL=postgresql+asyncpg://... needs the postgres extra"
        " (asyncpg is not installed): pip install 'wirebus[postgres]'"
    ]


def record(name: str, level: int, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_aiokafka_coordinator_errors_while_a_group_forms_are_not_written_at_info():
    from aiokafka.errors import GroupCoordinatorNotAvailableError

    noise = StartupNoiseFilter(logging.WARNING)
    forming = record(
        "aiokafka.consumer.group_coordinator",
        logging.ERROR,
        "Group Coordinator Request failed: %s",
        GroupCoordinatorNotAvailableError(),
    )

    assert not noise.filter(forming)
    assert forming.levelname == "INFO"


def test_aiokafka_info_is_dropped_but_its_real_errors_and_wirebus_info_are_kept():
    noise = StartupNoiseFilter(logging.WARNING)

    assert not noise.filter(record("aiokafka.consumer.subscription_state", logging.INFO, "x"))
    assert not noise.filter(record("alembic.runtime.plugins", logging.INFO, "setup plugin"))
    refused = record("aiokafka", logging.ERROR, 'Unable connect to "%s": %s', "h:1", "refused")
    assert noise.filter(refused)
    assert refused.levelname == "ERROR"
    assert noise.filter(record("wirebus.gateway.server", logging.INFO, "serving"))


def test_log_level_debug_writes_aiokafka_debug_and_demoted_records_too():
    noise = StartupNoiseFilter(logging.DEBUG)

    assert noise.filter(record("aiokafka.conn", logging.DEBUG, "connecting"))
    assert noise.filter(
        record("aiokafka", logging.ERROR, "failed: [Error 15] GroupCoordinatorNotAvailableError")
    )


def test_aiokafka_warnings_while_a_fresh_broker_forms_the_group_are_not_written_at_info():
    noise = StartupNoiseFilter(logging.WARNING)
    forming = [
        record(
            "aiokafka.consumer.group_coordinator",
            logging.WARNING,
            "Marking the coordinator dead (node %s)for group %s.",
            1,
            "payments",
        ),
        record("aiokafka.cluster", logging.ERROR, "Topic %s not found in cluster metadata", "t"),
        record(
            "aiokafka.coordinator.assignors.roundrobin",
            logging.WARNING,
            "No partition metadata for topic %s",
            "t",
        ),
    ]

    assert [noise.filter(r) for r in forming] == [False, False, False]
    assert {r.levelname for r in forming} == {"INFO"}


def test_aiokafka_warnings_that_it_does_not_retry_are_kept():
    noise = StartupNoiseFilter(logging.WARNING)
    denied = record(
        "aiokafka.cluster", logging.ERROR, "Topic %s is not authorized for this client", "t"
    )

    assert noise.filter(denied)
    assert denied.levelname == "ERROR"


def test_uvicorns_start_lines_on_its_error_logger_are_not_written_but_its_errors_are():
    noise = StartupNoiseFilter(logging.WARNING)

    assert not noise.filter(record("uvicorn.error", logging.INFO, "Started server process [%d]", 1))
    assert noise.filter(record("uvicorn.error", logging.ERROR, "Exception in ASGI application"))


def test_a_port_in_use_writes_the_error_line_and_nothing_from_grpc_core(tmp_path):
    (tmp_path / "empty_app.py").write_text("from wirebus import App\napp = App(name='e')\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        results = [
            wirebus(command, "empty_app:app", "--port", str(port), cwd=tmp_path)
            for command in ("serve", "run")
        ]

    for result in results:
        assert result.returncode == 1
        assert result.stderr.splitlines() == [
            f"Error: cannot listen on 127.0.0.1:{port}: the port is in use by another process,"
            " or the address is not this machine's (choose another with --port)"
        ]
