"""The inbox port: one conformance test run against every implementation."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from wirebus.inbox import InboxStore, InMemoryInbox
from wirebus.inbox.sqlalchemy import SqlAlchemyInbox


@pytest.fixture(params=["memory", "sqlite"])
async def inbox(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[InboxStore]:
    store: InboxStore
    if request.param == "memory":
        store = InMemoryInbox()
    else:
        sql = SqlAlchemyInbox(f"sqlite+aiosqlite:///{tmp_path}/inbox.db")
        await sql.create_schema()
        store = sql
    yield store
    await store.close()


async def test_inbox_conformance(inbox: InboxStore) -> None:
    # nothing is seen at first
    assert not await inbox.seen("payments", "e-1")

    # marking makes the pair seen
    await inbox.mark("payments", "e-1")
    assert await inbox.seen("payments", "e-1")

    # marking again is idempotent: no error, still seen
    await inbox.mark("payments", "e-1")
    assert await inbox.seen("payments", "e-1")

    # groups are independent
    assert not await inbox.seen("shipping", "e-1")
    await inbox.mark("shipping", "e-1")
    assert await inbox.seen("shipping", "e-1")

    # events are independent
    assert not await inbox.seen("payments", "e-2")

    # ids are matched exactly (a UUID-shaped id, a prefix of another id)
    await inbox.mark("payments", "8c4a7c1e-2b6f-4a53-9d0e-3c2f1a0b9e77")
    assert await inbox.seen("payments", "8c4a7c1e-2b6f-4a53-9d0e-3c2f1a0b9e77")
    assert not await inbox.seen("payments", "8c4a7c1e")
    assert not await inbox.seen("payments", "e-")

    # closing twice is fine
    await inbox.close()


async def test_the_sqlite_inbox_survives_a_restart(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/inbox.db"
    first = SqlAlchemyInbox(url)
    await first.create_schema()
    await first.mark("payments", "e-1")
    await first.close()

    second = SqlAlchemyInbox(url)
    await second.create_schema()  # idempotent on an existing table
    try:
        assert await second.seen("payments", "e-1")
        assert not await second.seen("shipping", "e-1")
    finally:
        await second.close()


async def test_the_sqlalchemy_inbox_does_not_dispose_an_engine_it_was_given(tmp_path: Path) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/shared.db")
    try:
        inbox = SqlAlchemyInbox(engine)
        await inbox.create_schema()
        await inbox.mark("g", "e")
        await inbox.close()

        async with engine.connect() as conn:
            rows = (
                await conn.execute(text("select consumer_group, event_id from wirebus_inbox"))
            ).all()
        assert [tuple(r) for r in rows] == [("g", "e")]
    finally:
        await engine.dispose()


async def test_batch_calls_answer_like_the_single_ones(inbox: InboxStore) -> None:
    await inbox.mark("payments", "e-1")

    # which of a batch were seen, in one call; an empty batch is fine
    assert await inbox.seen_many("payments", ["e-1", "e-2", "e-3"]) == {"e-1"}
    assert await inbox.seen_many("payments", []) == set()

    # marking a batch (with one already marked, and a repeat) is idempotent
    await inbox.mark_many("payments", ["e-1", "e-2", "e-2"])
    await inbox.mark_many("payments", [])
    assert await inbox.seen("payments", "e-2")
    assert await inbox.seen_many("payments", ["e-1", "e-2", "e-3"]) == {"e-1", "e-2"}
    assert await inbox.seen_many("shipping", ["e-1", "e-2"]) == set()


async def test_batches_larger_than_one_statement_are_split(inbox: InboxStore) -> None:
    ids = [f"e-{i}" for i in range(1234)]
    await inbox.mark_many("payments", ids[::2])
    assert await inbox.seen_many("payments", ids) == set(ids[::2])
