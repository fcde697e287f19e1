"""The saga store conformance suite (``wirebus.testing.saga_suite``) against ``MemorySagaStore``.

And the suite's own teeth: a store that breaks a rule fails the check of it.
"""

from __future__ import annotations

import pytest

from wirebus.saga.memory import MemorySagaStore
from wirebus.saga.state import SagaState
from wirebus.saga.store import SagaStore
from wirebus.testing.saga_harnesses import MemorySagaHarness
from wirebus.testing.saga_suite import (
    CHECKS,
    SagaCheck,
    a_state_read_or_written_is_not_the_stored_one,
    checks_for,
    update_at_a_stale_version_is_a_conflict_writing_nothing,
)


@pytest.mark.parametrize("check", checks_for(MemorySagaHarness), ids=lambda check: check.__name__)
async def test_the_memory_store_passes(check: SagaCheck) -> None:
    await check(MemorySagaHarness())


def test_the_memory_store_runs_every_check_a_store_without_transactions_can() -> None:
    assert checks_for(MemorySagaHarness) == CHECKS


def test_the_memory_store_is_a_saga_store() -> None:
    store: SagaStore = MemorySagaStore()
    assert isinstance(store, MemorySagaStore)


class IgnoresVersions(MemorySagaStore):
    """A broken store: ``update`` writes whatever version the stored saga is at."""

    async def update(self, state: SagaState, *, expected_version: int) -> None:
        stored = await self.get(state.saga_id)
        assert stored is not None
        await super().update(state, expected_version=stored.version)


class SharesObjects(MemorySagaStore):
    """A broken store: ``get`` hands out the stored object itself."""

    async def insert(self, state: SagaState) -> bool:
        self.kept = state
        return await super().insert(state)

    async def get(self, saga_id: str) -> SagaState | None:
        return self.kept


async def test_the_suite_catches_a_store_that_ignores_the_expected_version() -> None:
    with pytest.raises(AssertionError, match="stale version was written"):
        await update_at_a_stale_version_is_a_conflict_writing_nothing(
            MemorySagaHarness(IgnoresVersions())
        )


async def test_the_suite_catches_a_store_that_hands_out_its_stored_state() -> None:
    with pytest.raises(AssertionError, match="stored data is"):
        await a_state_read_or_written_is_not_the_stored_one(MemorySagaHarness(SharesObjects()))
