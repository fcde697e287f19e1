"""The OutboxStore conformance suite on the in-memory and SQLite stores.

(PostgreSQL runs it in tests/integration/test_relay_postgres.py.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from wirebus.testing.outbox_suite import (
    InMemoryOutboxHarness,
    OutboxHarness,
    OutboxStoreSuite,
    SqlOutboxHarness,
)


class TestInMemoryOutboxStore(OutboxStoreSuite):
    @pytest.fixture
    def outbox_harness(self) -> OutboxHarness:
        return InMemoryOutboxHarness()


class TestSqliteOutboxStore(OutboxStoreSuite):
    @pytest.fixture
    async def outbox_harness(self, tmp_path: Path) -> AsyncIterator[OutboxHarness]:
        harness = SqlOutboxHarness(f"sqlite+aiosqlite:///{tmp_path}/outbox.db")
        await harness.start()
        try:
            yield harness
        finally:
            await harness.close()
