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
    assert any("consuming wirebus-quiet-" in line and group in line for line in lines), stderr
