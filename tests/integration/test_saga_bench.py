"""The saga benchmark runs at a tiny size on the real PostgreSQL and checks its own rows.

``bench/saga_throughput.py`` is a measurement, not a test; this only proves
that it still runs end to end (fresh databases, both python-cqrs rows and the
wirebus row) and that every row passed its own correctness check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.checkout import PYTHONPATH, ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SAGAS, CONCURRENCY = 12, 4


def test_the_saga_benchmark_measures_and_verifies_every_row_at_a_tiny_size(
    database_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "sagas.json"
    env = {**os.environ, "PYTHONPATH": PYTHONPATH, "WIREBUS_DATABASE_URL": database_url}
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "saga_throughput.py"),
            "--sagas",
            str(SAGAS),
            "--concurrency",
            str(CONCURRENCY),
            "--timeout",
            "120",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-2000:]
    rows = {r["key"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"cqrs_shipped", "cqrs_quiet", "wirebus"}
    for row in rows.values():
        assert "skipped" not in row, row
        assert row["verified"], (row["key"], row["problems"])
        assert row["completed"] == SAGAS + row["warmup"]  # the warm-up sagas are kept too
        assert row["step_rows"] == 3 * (SAGAS + row["warmup"])
        assert row["commits_per_saga"] >= 1
        assert row["statements_per_saga"] >= 3  # at least each step's own insert
    # wirebus: the start, then one transaction per step (its write and the saga's state)
    assert rows["wirebus"]["commits_per_saga"] <= 3 + 1
