"""Dead-letter replay over the in-memory broker: back to the original topic, once."""

import asyncio
import datetime as dt
from collections import Counter

from shop.orders.v1 import orders_pb2

from wirebus import App, Event, InvalidArgument, Router
from wirebus.broker import Record
from wirebus.brokers.memory import InMemoryBroker
from wirebus.consumer import EventProcessor
from wirebus.dlq import REPLAY_GROUP, replay, replay_record
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

    async def replay(self, limit: int | None = None) -> int:
        port = self.broker.consumer(group=REPLAY_GROUP, topics=[DLQ])
        return await asyncio.wait_for(
            replay(port, self.publisher, limit=limit, idle_seconds=IDLE), TIMEOUT
        )


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
