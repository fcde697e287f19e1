"""The ``OutboxStore`` conformance suite: every store a relay runs on passes it.

Subclass :class:`OutboxStoreSuite` in a test module and provide an
``outbox_harness`` fixture yielding an :class:`OutboxHarness` for the store
under test (a fresh, empty outbox per test). Needs pytest with pytest-asyncio
in ``auto`` mode. wirebus runs it against its three stores with the harnesses
of :mod:`wirebus.testing.outbox_harnesses`.

Example::

    class TestInMemoryOutboxStore(OutboxStoreSuite):
        @pytest.fixture
        async def outbox_harness(self) -> AsyncIterator[OutboxHarness]:
            yield InMemoryOutboxHarness()
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import pytest

from ..broker import OutgoingRecord, PublishError
from ..brokers.memory import InMemoryBroker
from ..outbox.relay import Relay
from ..outbox.rows import SHARDS
from ..outbox.store import OutboxStore, StoredRow
from .waiting import wait_until

__all__ = [
    "InMemoryOutboxHarness",
    "LateWrite",
    "OutboxHarness",
    "OutboxStoreSuite",
    "SqlOutboxHarness",
    "SuitePublisher",
    "record",
]

# The harnesses of wirebus' own stores (importable from here too).
from .outbox_harnesses import InMemoryOutboxHarness, SqlOutboxHarness

TOPIC = "wirebus.suite.v1"
WAIT = 10.0


class LateWrite(Protocol):
    """A write that took its ids and commits later (``await late.commit()``)."""

    async def commit(self) -> None: ...


class OutboxHarness(Protocol):
    """What the suite needs to drive one store implementation over one outbox."""

    async def new_store(self, *, retention: dt.timedelta | None = None) -> OutboxStore:
        """A new store object on this outbox (one per relay; closed by the relay)."""

    async def write(self, records: Sequence[OutgoingRecord]) -> None:
        """Commit ``records`` as rows, as a unit of work does."""

    async def write_late(self, records: Sequence[OutgoingRecord]) -> LateWrite:
        """Take ids for ``records`` now; the rows become visible on ``commit``."""

    async def rows(self) -> list[StoredRow]:
        """Every row, in id order."""

    async def advance(self, by: dt.timedelta) -> None:
        """Let ``by`` pass for the outbox: backoffs end, published rows age."""


def record(key: str, n: int) -> OutgoingRecord:
    """The ``n``-th record of aggregate ``key`` (its value says ``key:n``)."""
    headers = (("ce_id", str(uuid.uuid4()).encode()), ("ce_type", b"wirebus.suite.v1.Happened"))
    return OutgoingRecord(TOPIC, key.encode(), f"{key}:{n}".encode(), headers)


def seq(value: bytes | None) -> tuple[str, int]:
    key, _, n = (value or b"").decode().partition(":")
    return key, int(n)


class SuitePublisher:
    """Publishes to an in-memory broker, except records ``fail(record)`` returns an error for."""

    def __init__(self, broker: InMemoryBroker | None = None) -> None:
        self.broker = broker or InMemoryBroker(partitions=1)
        self.fail: Callable[[OutgoingRecord], BaseException | None] = lambda _r: None
        self.calls = 0

    def published(self) -> list[tuple[str, int]]:
        return [seq(r.value) for r in self.broker.records(TOPIC)]

    async def publish(self, event: Any, *, subject: str | None = None) -> None:
        raise NotImplementedError

    async def publish_many(self, events: Any) -> None:
        raise NotImplementedError

    async def send_records(self, records: Sequence[OutgoingRecord]) -> None:
        raise NotImplementedError

    async def send_records_settled(
        self, records: Sequence[OutgoingRecord]
    ) -> list[BaseException | None]:
        self.calls += 1
        results = [self.fail(r) for r in records]
        await self.broker.append([r for r, e in zip(records, results, strict=True) if e is None])
        return results


def refused(r: OutgoingRecord) -> PublishError:
    error = PublishError(r.topic, "MessageSizeTooLargeError")
    error.retriable = False
    return error


def fail_key(key: str) -> Callable[[OutgoingRecord], BaseException | None]:
    return lambda r: refused(r) if r.key == key.encode() else None


async def relay_for(h: OutboxHarness, publisher: SuitePublisher, **options: Any) -> Relay:
    retention = options.pop("retention", None)
    relay = Relay(await h.new_store(retention=retention), publisher, **options)
    await relay.start()
    return relay


async def drain(relay: Relay, passes: int = 50) -> None:
    for _ in range(passes):
        if not await relay.relay_once():
            return


class OutboxStoreSuite:
    """The behaviour every ``OutboxStore`` shows a ``Relay`` (tests need ``outbox_harness``)."""

    async def test_publishes_rows_in_id_order_with_their_bytes_and_removes_them(
        self, outbox_harness: OutboxHarness
    ) -> None:
        h, publisher = outbox_harness, SuitePublisher()
        written = [record("a", 1), record("b", 1), record("a", 2), record("c", 1)]
        await h.write(written[:2])
        await h.write(written[2:])
        relay = await relay_for(h, publisher)
        try:
            assert await relay.relay_once() == 4
            assert await relay.relay_once() == 0
        finally:
            await relay.close()
        published = publisher.broker.records(TOPIC)  # one partition: in publishing order
        assert [(r.key, r.value, r.headers) for r in published] == [
            (r.key, r.value, r.headers) for r in written
        ]
        assert relay.published == 4
        assert await h.rows() == []

    async def test_keeps_each_keys_order_across_batches(
        self, outbox_harness: OutboxHarness
    ) -> None:
        h, publisher = outbox_harness, SuitePublisher()
        keys = [f"k{i}" for i in range(7)]
        for n in range(1, 6):
            await h.write([record(k, n) for k in keys])
        relay = await relay_for(h, publisher, batch_size=4)
        try:
            await drain(relay)
        finally:
            await relay.close()
        per_key: dict[str, list[int]] = {}
        for key, n in publisher.published():
            per_key.setdefault(key, []).append(n)
        assert per_key == {k: [1, 2, 3, 4, 5] for k in keys}

    async def test_a_row_committed_late_with_a_lower_id_is_still_published(
        self, outbox_harness: OutboxHarness
    ) -> None:
        h, publisher = outbox_harness, SuitePublisher()
        late = await h.write_late([record("late", 1)])  # took the lowest id ...
        await h.write([record("early", 1), record("early", 2)])
        relay = await relay_for(h, publisher)
        try:
            assert await relay.relay_once() == 2
            await late.commit()  # ... and commits after higher ids were published
            assert await relay.relay_once() == 1
        finally:
            await relay.close()
        assert publisher.published() == [("early", 1), ("early", 2), ("late", 1)]
        assert await h.rows() == []

    async def test_a_backing_off_row_holds_back_only_its_key(
        self, outbox_harness: OutboxHarness
    ) -> None:
        h, publisher = outbox_harness, SuitePublisher()
        publisher.fail = fail_key("bad")
        await h.write([record("bad", 1), record("good", 1), record("bad", 2)])
        relay = await relay_for(h, publisher, initial_backoff=60, max_backoff=60)
        try:
            assert await relay.relay_once() == 3
            first = (await h.rows())[0]
            assert (seq(first.value), first.status, first.attempts) == (("bad", 1), "pending", 1)
            assert "MessageSizeTooLarge" in (first.last_error or "")
            publisher.fail = lambda _r: None
            await h.write([record("bad", 3), record("good", 2)])
            await drain(relay)
            assert publisher.published() == [("good", 1), ("good", 2)]  # "bad" waits
            await h.advance(dt.timedelta(seconds=61))  # the backoff is over
            await drain(relay)
        finally:
            await relay.close()
        assert [p for p in publisher.published() if p[0] == "bad"] == [
            ("bad", 1),
            ("bad", 2),
            ("bad", 3),
        ]
        assert await h.rows() == []

    async def test_a_backing_off_key_that_fills_the_batch_does_not_starve_other_keys(
        self, outbox_harness: OutboxHarness
    ) -> None:
        h, publisher = outbox_harness, SuitePublisher()
        publisher.fail = fail_key("bad")
        await h.write([record("bad", 1), record("bad", 2), record("bad", 3), record("good", 1)])
        relay = await relay_for(h, publisher, batch_size=2, initial_backoff=60)
        try:
            for _ in range(5):
                await relay.relay_once()
        finally:
            await relay.close()
        assert publisher.published() == [("good", 1)]

    async def test_a_row_fails_after_max_attempts_and_retry_failed_requeues_it(
        self, outbox_harness: OutboxHarness
    ) -> None:
        h, publisher = outbox_harness, SuitePublisher()
        publisher.fail = fail_key("bad")
        await h.write([record("bad", 1), record("good", 1)])
        relay = await relay_for(h, publisher, initial_backoff=1, max_backoff=1, max_attempts=3)
        try:
            for _ in range(3):
                await relay.relay_once()
                await h.advance(dt.timedelta(seconds=2))
            (row,) = await h.rows()
            assert (row.status, row.attempts, relay.failed) == ("failed", 3, 1)
            stats = await relay.stats()
            assert (stats.pending, stats.failed, stats.oldest_pending_seconds) == (0, 1, None)
            publisher.fail = lambda _r: None
            await h.write([record("bad", 2)])  # a failed row no longer holds its key back
            assert await relay.relay_once() == 1
            assert await relay.store.retry_failed() == 1
            (row,) = await h.rows()
            assert (row.status, row.attempts) == ("pending", 0)
            assert await relay.relay_once() == 1
            assert await relay.store.retry_failed() == 0
        finally:
            await relay.close()
        assert [p for p in publisher.published() if p[0] == "bad"] == [("bad", 2), ("bad", 1)]

    async def test_retention_keeps_published_rows_then_purges_them(
        self, outbox_harness: OutboxHarness
    ) -> None:
        h, publisher = outbox_harness, SuitePublisher()
        await h.write([record("kept", 1), record("kept", 2)])
        relay = await relay_for(h, publisher, retention=dt.timedelta(hours=1))
        try:
            assert await relay.relay_once() == 2
            rows = await h.rows()
            assert [(r.status, r.published_at is not None) for r in rows] == [
                ("published", True)
            ] * 2
            assert await relay.relay_once() == 0  # published rows are not relayed again
            await h.advance(dt.timedelta(hours=2))
            await h.write([record("kept", 3)])
            assert await relay.relay_once() == 1
        finally:
            await relay.close()
        assert [(seq(r.value), r.status) for r in await h.rows()] == [(("kept", 3), "published")]
        assert publisher.published() == [("kept", 1), ("kept", 2), ("kept", 3)]

    async def test_a_broker_outage_spends_no_attempt_and_the_relay_resumes(
        self, outbox_harness: OutboxHarness
    ) -> None:
        h, publisher = outbox_harness, SuitePublisher()
        publisher.fail = lambda r: PublishError(r.topic, "KafkaConnectionError")  # retriable
        await h.write([record("a", 1), record("b", 1), record("a", 2)])
        relay = await relay_for(
            h, publisher, poll_interval=0.02, initial_backoff=0.01, max_backoff=0.05
        )
        task = asyncio.create_task(relay.run())
        try:
            await wait_until(lambda: publisher.calls >= 3, within=WAIT)
            for row in await h.rows():
                assert (row.status, row.attempts, row.last_error) == ("pending", 0, None)
            publisher.fail = lambda _r: None  # the broker is back
            await wait_until(lambda: len(publisher.published()) == 3, within=WAIT)
            await wait_until(self._empty(h), within=WAIT)
        finally:
            await relay.stop()
            await asyncio.wait_for(task, WAIT)
        assert relay.failed == 0
        assert publisher.published() == [("a", 1), ("b", 1), ("a", 2)]

    async def test_the_run_loop_picks_up_new_rows_and_stops_cleanly(
        self, outbox_harness: OutboxHarness
    ) -> None:
        h, publisher = outbox_harness, SuitePublisher()
        relay = await relay_for(h, publisher, poll_interval=0.05)
        task = asyncio.create_task(relay.run())
        try:
            for n in range(1, 4):
                await h.write([record("a", n)])
                await wait_until(_count_is(publisher, n), within=WAIT)
        finally:
            await relay.stop()
            await asyncio.wait_for(task, WAIT)
        assert publisher.published() == [("a", 1), ("a", 2), ("a", 3)]
        assert relay.shards == frozenset()  # run() closes the relay (and its store)

    async def test_several_relays_split_the_shards_and_publish_every_row_once(
        self, outbox_harness: OutboxHarness
    ) -> None:
        h, publisher = outbox_harness, SuitePublisher()
        first = await relay_for(h, publisher, poll_interval=0.1, batch_size=20)
        if not first.store.shared:
            await first.close()
            pytest.skip("this store serves one relay at a time (shared = False)")
        second = await relay_for(h, publisher, poll_interval=0.1, batch_size=20)
        tasks = [asyncio.create_task(r.run()) for r in (first, second)]
        try:

            def split() -> bool:
                a, b = first.shards, second.shards
                return bool(a and b) and not a & b and len(a | b) == SHARDS

            await wait_until(split, within=WAIT)
            keys = [f"k{i}" for i in range(40)]
            for n in range(1, 6):
                await h.write([record(k, n) for k in keys])
            await wait_until(self._empty(h), within=WAIT * 2)
        finally:
            for r in (first, second):
                await r.stop()
            await asyncio.wait_for(asyncio.gather(*tasks), WAIT)
        assert min(first.published, second.published) > 0
        assert first.published + second.published == 200
        per_key: dict[str, list[int]] = {}
        for key, n in publisher.published():
            per_key.setdefault(key, []).append(n)
        assert per_key == {k: [1, 2, 3, 4, 5] for k in keys}

    async def test_stats_count_pending_and_failed_rows_and_the_oldest_age(
        self, outbox_harness: OutboxHarness
    ) -> None:
        h, publisher = outbox_harness, SuitePublisher()
        store = await h.new_store()
        stats = await store.stats()
        assert (stats.pending, stats.failed, stats.oldest_pending_seconds) == (0, 0, None)
        publisher.fail = fail_key("bad")
        await h.write([record("bad", 1), record("a", 1)])
        relay = Relay(store, publisher, max_attempts=1)
        await relay.start()
        try:
            await relay.relay_once()
            await h.write([record("b", 1), record("c", 1)])
            await h.advance(dt.timedelta(seconds=90))
            stats = await store.stats()
        finally:
            await relay.close()
        assert (stats.pending, stats.failed) == (2, 1)
        assert stats.oldest_pending_seconds is not None
        assert 90 <= stats.oldest_pending_seconds < 150

    @staticmethod
    def _empty(h: OutboxHarness) -> Callable[[], Any]:
        async def empty() -> bool:
            return not [r for r in await h.rows() if r.status == "pending"]

        return empty


def _count_is(publisher: SuitePublisher, n: int) -> Callable[[], bool]:
    return lambda: len(publisher.published()) == n
