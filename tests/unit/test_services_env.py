"""``scripts/services env`` with the services stopped says so, and ``eval`` of it stays
harmless: it printed nothing, and ``wirebus run`` then used the in-memory broker silently.

The services' state directory is an empty one (``WIREBUS_SERVICES_DIR``), so the
shared services of the machine are neither seen nor touched.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "scripts" / "services"


def env_of_stopped_services(tmp_path: Path, command: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WIREBUS_")}
    env["WIREBUS_SERVICES_DIR"] = str(tmp_path)
    return subprocess.run(
        ["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip


def test_env_with_the_services_stopped_says_each_is_stopped_and_exports_nothing(tmp_path):
    done = env_of_stopped_services(tmp_path, f"{SERVICES} env")

    assert (done.returncode, done.stdout) == (0, "")
    assert done.stderr.splitlines() == [
        "services: kafka is stopped: WIREBUS_KAFKA_BOOTSTRAP not set,"
        " wirebus would use its in-memory broker (scripts/services start)",
        "services: postgres is stopped: WIREBUS_DATABASE_URL not set,"
        " wirebus would use a SQLite file (scripts/services start)",
    ]


def test_eval_of_env_with_the_services_stopped_sets_nothing_and_succeeds(tmp_path):
    done = env_of_stopped_services(
        tmp_path,
        f'set -e; eval "$({SERVICES} env 2>/dev/null)";'
        ' echo "${WIREBUS_KAFKA_BOOTSTRAP-unset} ${WIREBUS_DATABASE_URL-unset}"',
    )

    assert (done.returncode, done.stdout) == (0, "unset unset\n"), done.stderr
