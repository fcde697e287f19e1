"""The saga benchmark's harness counts exactly and catches a row that skipped work.

``bench/saga_throughput.py`` compares saga libraries on PostgreSQL; what it
reports is only worth something if its transaction counts are exact and its
end-of-row check fails a row whose sagas did not do every step. Both are
proved here on a SQLite file, with a saga-less subject doing the same writes.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import saga_throughput as bench


class StepWriter:
    """Writes a saga's step rows, one transaction each, skipping the steps in ``skip``."""

    def __init__(self, engine: AsyncEngine, *, skip: frozenset[int] = frozenset()) -> None:
        self.engine = engine
        self.skip = skip
        self.finished: list[str] = []

    async def setup(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(bench.app_metadata.create_all)

    async def run_saga(self, key: str) -> None:
        for step in range(bench.STEPS):
            if step in self.skip:
                continue
            async with self.engine.begin() as conn:
                await conn.execute(
                    bench.INSERT_STEP, {"saga_key": key, "step": step, "state": "done"}
                )
        self.finished.append(key)

    async def completed(self) -> int:
        return len(self.finished)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'bench.db'}")
    yield engine
    await engine.dispose()


async def test_every_transaction_and_statement_of_the_engine_is_counted(
    engine: AsyncEngine,
) -> None:
    subject = StepWriter(engine)
    await subject.setup()
    counts = bench.Counts()
    bench.count_engine(engine, counts)

    latencies = await bench.drive(subject.run_saga, [f"k{i}" for i in range(10)], concurrency=3)

    assert len(latencies) == 10
    seen = counts.snapshot()
    assert (seen["begins"], seen["commits"], seen["rollbacks"]) == (30, 30, 0)
    assert seen["statements"] == 30


async def test_a_row_whose_sagas_did_every_step_is_verified(engine: AsyncEngine) -> None:
    subject = StepWriter(engine)
    await subject.setup()
    await bench.drive(subject.run_saga, [f"k{i}" for i in range(6)], concurrency=2)

    check = await bench.verify(engine, subject, 6)

    assert check["verified"], check["problems"]
    assert (check["completed"], check["step_rows"]) == (6, 18)


async def test_a_row_whose_sagas_skipped_a_step_fails_verification(engine: AsyncEngine) -> None:
    subject = StepWriter(engine, skip=frozenset({1}))
    await subject.setup()
    await bench.drive(subject.run_saga, [f"k{i}" for i in range(6)], concurrency=2)

    check = await bench.verify(engine, subject, 6)

    assert not check["verified"]
    assert any("bench_step: 12 rows" in p for p in check["problems"])


async def test_a_row_with_sagas_not_completed_fails_verification(engine: AsyncEngine) -> None:
    subject = StepWriter(engine)
    await subject.setup()
    await bench.drive(subject.run_saga, [f"k{i}" for i in range(4)], concurrency=2)

    check = await bench.verify(engine, subject, 5)

    assert not check["verified"]
    assert "4 sagas completed, expected 5" in check["problems"]
