"""A normal start on real Kafka writes no ERROR line and none of aiokafka's INFO chatter.

aiokafka logs at ERROR what is normal while a consumer group forms
(``GroupCoordinatorNotAvailableError``) and at INFO every join and assignment;
``wirebus run`` and ``consume`` demote and hide them unless ``--log-level debug``.
The app consumes a topic of its own (a fresh name), as a fresh group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from tests.crosslang.conftest import group_members

ROOT = Path(__file__).resolve().parents[2]
WITHIN = 60.0


@pytest.fixture
def quiet_app(tmp_path: Path) -> tuple[Path, str]:
    topic = f"wirebus-quiet-{uuid.uuid4().hex[:8]}"
    (tmp_path / "quiet_app.py").write_text(
        textwrap.dedent(
            f"""
            from shop.orders.v1 import orders_pb2
            from wirebus import App, Event, Router

            class Placed(Event, proto=orders_pb2.OrderPlaced, key="order_id", topic="{topic}"):
                order_id: str

            router = Router("quiet")

            @router.handler
            async def placed(event: Placed) -> None: ...

            app = App(name="quiet", services=[], routers=[router], events=[Placed])
            """
        )
    )
    return tmp_path, topic


def start(command: str, cwd: Path, bootstrap: str, group: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WIREBUS_")}
    env["WIREBUS_KAFKA_BOOTSTRAP"] = bootstrap
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (ROOT / "src", ROOT / "gen" / "python"))
    extra = ["--port", "0"] if command == "run" else []
    return subprocess.Popen(
        [sys.executable, "-m", "wirebus", command, "quiet_app:app", "--group", group, *extra],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.parametrize("command", ["run", "consume"])
def test_a_normal_start_on_kafka_logs_no_error_and_no_aiokafka_info(
    quiet_app: tuple[Path, str], bootstrap: str, command: str
) -> None:
    cwd, _topic = quiet_app
    group = f"quiet-{uuid.uuid4().hex[:8]}"
    proc = start(command, cwd, bootstrap, group)
    try:
        deadline = time.monotonic() + WITHIN
        while group_members(bootstrap, group) < 1:  # joined: the group has formed
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, f"{group} has no member after {WITHIN:g} s"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)

    assert proc.returncode == 0, stderr
    lines = stderr.splitlines()
    assert [line for line in lines if " ERROR " in line] == []
    assert [line for line in lines if " INFO aiokafka" in line] == []
    assert [line for line in lines if "partitions revoked: []" in line] == []  # the first join
    assert any("consuming wirebus-quiet-" in line and group in line for line in lines), stderr


def test_a_dry_run_replay_of_a_dlq_not_created_yet_writes_its_count_and_nothing_else(
    tmp_path: Path, bootstrap: str
) -> None:
    topic = f"wirebus-quiet-{uuid.uuid4().hex[:8]}.dlq"  # no dead letter yet: no topic
    env = {k: v for k, v in os.environ.items() if not k.startswith("WIREBUS_")}
    env.update(WIREBUS_KAFKA_BOOTSTRAP=bootstrap, PYTHONPATH=str(ROOT / "src"))
    done = subprocess.run(
        [sys.executable, "-m", "wirebus", "dlq", "replay", "--topic", topic, "--dry-run"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"would replay 0 record(s) from {topic} (dry run)"]
    assert done.stderr == ""


def test_a_relay_says_in_its_start_line_that_it_publishes_the_outbox(
    quiet_app: tuple[Path, str], bootstrap: str
) -> None:
    cwd, _topic = quiet_app
    env = {k: v for k, v in os.environ.items() if not k.startswith("WIREBUS_")}
    env.update(
        WIREBUS_KAFKA_BOOTSTRAP=bootstrap,
        WIREBUS_DATABASE_URL=f"sqlite+aiosqlite:///{cwd / 'quiet.db'}",
        PYTHONPATH=os.pathsep.join(str(p) for p in (ROOT / "src", ROOT / "gen" / "python")),
    )
    log = cwd / "relay.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wirebus", "relay", "quiet_app:app"],
            cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=stderr, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + WITHIN
            while "wirebus relay: " not in log.read_text():
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, f"no start line in {WITHIN:g} s"
                time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)

    assert proc.returncode == 0, log.read_text()
    assert "wirebus relay: quiet publishing its outbox (Kafka)" in log.read_text().splitlines()
