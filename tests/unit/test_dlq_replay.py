"""Dead-letter replay over the in-memory broker: back to the original topic, once.

A replay takes the range fixed when it starts (the DLQ's end offsets then): a
record that fails again and comes back to the DLQ is not read again by the
same replay, so a replay cannot loop.
"""

import asyncio
import datetime as dt
from collections import Counter
from typing import Any

import pytest
from shop.orders.v1 import orders_pb2

from wirebus import App, Event, InvalidArgument, Router
from wirebus.broker import Record
from wirebus.brokers.memory import InMemoryBroker
from wirebus.consumer import EventProcessor
from wirebus.dlq import (
    REPLAY_GROUP,
    ReplayReport,
    check_dead_letter_topic,
    replay,
    replay_record,
)
from wirebus.errors import ConfigurationError, PublishError
from wirebus.inbox import InMemoryInbox

TIMEOUT = 10
NOW = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
TOPIC = "shop.orders.v1"
DLQ = TOPIC + ".dlq"
IDLE = 0.05


class Cancelled(Event, proto=orders_pb2.OrderCancelled, key="order_id"):
    order_id: str
    reason: str
    cancelled_at: dt.datetime


class Shop:
    """An app whose handler rejects events until ``fixed`` is set."""

    def __init__(self) -> None:
        self.fixed = False
        self.handled: list[str] = []
        router = Router("test")

        @router.handler
        async def on_cancelled(event: Cancelled) -> None:
            if not self.fixed:
                raise InvalidArgument(f"cannot cancel {event.order_id}")
            self.handled.append(event.order_id)

        self.app = App(name="test", routers=[router])
        self.broker = InMemoryBroker()
        self.publisher = self.broker.publisher(self.app.registry(), source="test")
        self.processor = EventProcessor(
            self.app.mediator(),
            self.app.registry(),
            group="g",
            inbox=InMemoryInbox(),
            dead_letters=self.publisher,
        )

    async def dead_letter(self, *order_ids: str) -> list[Record]:
        """Publish events and process them into the DLQ; return the original records."""
        await self.publisher.publish_many(
            [Cancelled(order_id=o, reason="", cancelled_at=NOW) for o in order_ids]
        )
        originals = self.broker.records(TOPIC)
        for record in originals:
            assert await self.processor.process(record) == "dead_lettered"
        return originals

    async def replay(
        self,
        limit: int | None = None,
        *,
        topic: str = DLQ,
        dry_run: bool = False,
        publisher: Any = None,
    ) -> int:
        return (
            await self.report(limit, topic=topic, dry_run=dry_run, publisher=publisher)
        ).replayed

    async def report(
        self,
        limit: int | None = None,
        *,
        topic: str = DLQ,
        dry_run: bool = False,
        publisher: Any = None,
    ) -> ReplayReport:
        port = self.broker.consumer(group=REPLAY_GROUP, topics=[topic])
        return await asyncio.wait_for(
            replay(
                port,
                publisher or self.publisher,
                limit=limit,
                idle_seconds=IDLE,
                dry_run=dry_run,
            ),
            TIMEOUT,
        )


class FailingAgainAtOnce:
    """A publisher whose replayed records fail again at once: they are processed as
    soon as they are sent, and the still-broken handler dead-letters them again."""

    def __init__(self, shop: Shop) -> None:
        self.shop = shop

    async def send_records(self, records: Any) -> None:
        before = len(self.shop.broker.records(TOPIC))
        await self.shop.publisher.send_records(records)
        for record in self.shop.broker.records(TOPIC)[before:]:
            assert await self.shop.processor.process(record) == "dead_lettered"


class BrokenAfter:
    """A publisher that acknowledges ``n`` sends, then fails every one."""

    def __init__(self, shop: Shop, n: int) -> None:
        self.shop, self.left = shop, n

    async def send_records(self, records: Any) -> None:
        if self.left == 0:
            raise PublishError(TOPIC, "the broker went away")
        self.left -= 1
        await self.shop.publisher.send_records(records)


async def test_a_dead_lettered_record_goes_back_to_its_original_topic_unchanged() -> None:
    shop = Shop()
    [original] = await shop.dead_letter("o-1")
    [dead] = shop.broker.records(DLQ)
    assert dead.header("wirebus_original_topic") == TOPIC.encode()

    assert await shop.replay() == 1

    replayed = [r for r in shop.broker.records(TOPIC) if r != original]
    assert len(replayed) == 1
    [again] = replayed
    assert again.header("ce_id") == original.header("ce_id")
    assert not any(k.startswith("wirebus_") for k, _ in again.headers)
    assert again.headers == original.headers
    assert (again.key, again.value) == (original.key, original.value)
    assert again.partition == original.partition


async def test_a_replayed_record_is_handled_once_the_handler_is_fixed() -> None:
    shop = Shop()
    await shop.dead_letter("o-1")
    await shop.replay()
    shop.fixed = True

    replayed = shop.broker.records(TOPIC)[-1]

    assert await shop.processor.process(replayed) == "handled"
    assert shop.handled == ["o-1"]


async def test_replay_sends_at_most_limit_records_and_the_next_replay_continues() -> None:
    shop = Shop()
    await shop.dead_letter("o-1", "o-2", "o-3", "o-4", "o-5")
    assert len(shop.broker.records(DLQ)) == 5

    assert await shop.replay(limit=2) == 2
    assert len(shop.broker.records(TOPIC)) == 5 + 2

    assert await shop.replay(limit=2) == 2
    assert await shop.replay() == 1

    copies = Counter(r.header("ce_id") for r in shop.broker.records(TOPIC))
    assert len(copies) == 5
    assert set(copies.values()) == {2}  # each event: the original and one replay


async def test_a_second_replay_with_the_same_group_sends_nothing_new() -> None:
    shop = Shop()
    await shop.dead_letter("o-1", "o-2")

    assert await shop.replay() == 2
    count = len(shop.broker.records(TOPIC))
    assert await shop.replay() == 0

    assert len(shop.broker.records(TOPIC)) == count
    assert sum(shop.broker.committed(REPLAY_GROUP, (DLQ, p)) for p in range(3)) == 2


async def test_replay_of_an_empty_dlq_sends_nothing() -> None:
    shop = Shop()
    assert await shop.replay() == 0
    assert shop.broker.records(TOPIC) == []


def test_a_record_without_the_original_topic_header_goes_to_the_topic_without_dlq() -> None:
    record = Record(DLQ, 0, 3, b"k", b"v", (("ce_id", b"1"), ("wirebus_attempts", b"2")))

    out = replay_record(record)

    assert out.topic == TOPIC
    assert out.headers == (("ce_id", b"1"),)
    assert (out.key, out.value) == (b"k", b"v")


def test_the_original_topic_header_wins_over_the_dlq_name() -> None:
    record = Record("custom-dead", 0, 0, None, None, (("wirebus_original_topic", b"orders"),))

    out = replay_record(record)

    assert out.topic == "orders"
    assert out.headers == ()
    assert out.value == b""


async def test_a_record_that_fails_again_is_not_replayed_again_by_the_same_replay() -> None:
    """The defect: ``--limit 10`` on one dead letter replayed it 10 times (10 new dead
    letters); without a limit it never stopped."""
    shop = Shop()
    await shop.dead_letter("o-1")

    report = await shop.report(limit=10, publisher=FailingAgainAtOnce(shop))

    assert report.replayed == 1
    assert len(shop.broker.records(DLQ)) == 2  # the first dead letter and its failed replay
    assert await shop.replay(publisher=FailingAgainAtOnce(shop)) == 1  # the next run: the new one


async def test_without_a_limit_a_replay_of_records_that_keep_failing_ends() -> None:
    shop = Shop()
    await shop.dead_letter("o-1", "o-2", "o-3")

    assert await shop.replay(publisher=FailingAgainAtOnce(shop)) == 3
    assert len(shop.broker.records(DLQ)) == 6


async def test_a_topic_that_is_not_a_dlq_is_refused_unless_forced() -> None:
    with pytest.raises(ConfigurationError, match=r"not a dead-letter topic.*shop\.orders\.v1\.dlq"):
        check_dead_letter_topic(TOPIC)
    check_dead_letter_topic(DLQ)
    check_dead_letter_topic(TOPIC, force=True)


async def test_a_forced_replay_of_a_topic_into_itself_stops_at_its_end_at_the_start() -> None:
    """``--topic shop.orders.v1 --force``: each record once, not 5,292 in 60 s."""
    shop = Shop()
    await shop.publisher.publish_many(
        [Cancelled(order_id=o, reason="", cancelled_at=NOW) for o in ("o-1", "o-2", "o-3")]
    )

    assert await shop.replay(topic=TOPIC) == 3

    assert len(shop.broker.records(TOPIC)) == 6


async def test_a_dry_run_lists_what_it_would_send_and_sends_and_commits_nothing() -> None:
    shop = Shop()
    await shop.dead_letter("o-1", "o-2")

    report = await shop.report(dry_run=True)

    assert report.replayed == 0
    assert sorted(item.key for item in report.items) == [b"o-1", b"o-2"]
    [line, _] = sorted(item.line() for item in report.items)
    assert "-> shop.orders.v1 key=o-1" in line
    assert "type=shop.orders.v1.OrderCancelled" in line
    assert "reason=InvalidArgument: cannot cancel o-1" in line
    assert len(shop.broker.records(TOPIC)) == 2  # the originals only
    assert sum(shop.broker.committed(REPLAY_GROUP, (DLQ, p)) for p in range(3)) == 0
    assert await shop.replay() == 2  # the real one sends what the dry run listed


async def test_the_count_is_what_was_acknowledged_and_a_failed_send_stops_the_replay() -> None:
    shop = Shop()
    await shop.dead_letter("o-1", "o-2", "o-3")

    report = await shop.report(publisher=BrokenAfter(shop, 1))

    assert report.replayed == 1
    assert report.failure is not None
    assert "the broker went away" in report.failure
    assert sum(shop.broker.committed(REPLAY_GROUP, (DLQ, p)) for p in range(3)) == 1
    assert await shop.replay() == 2  # the rest, once the broker is back
