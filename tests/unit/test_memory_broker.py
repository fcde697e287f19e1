"""InMemoryBroker: partitions, consumer groups, offsets, seek and waiting fetches."""

import asyncio
import datetime as dt
import time
from collections.abc import Mapping, Sequence

import pytest
from aiokafka.partitioner import DefaultPartitioner

from examples.shop.orders.messages import OrderCancelled
from wirebus import ConfigurationError
from wirebus.broker import OutgoingRecord, Record
from wirebus.brokers.memory import InMemoryBroker
from wirebus.codec import EventRegistry
from wirebus.testing import wait_until

TIMEOUT = 5
TOPIC = "t"


def out(key: bytes | None, value: bytes, topic: str = TOPIC) -> OutgoingRecord:
    return OutgoingRecord(topic=topic, key=key, value=value, headers=(("h", value),))


def values(
    batch: Mapping[tuple[str, int], Sequence[Record]],
) -> dict[tuple[str, int], list[bytes | None]]:
    return {tp: [r.value for r in records] for tp, records in batch.items()}


# ---------------------------------------------------------------- partitions


def test_partitions_must_be_positive() -> None:
    with pytest.raises(ConfigurationError, match="partitions must be at least 1"):
        InMemoryBroker(partitions=0)


async def test_a_keyed_record_lands_where_kafkas_default_partitioner_puts_it() -> None:
    broker = InMemoryBroker(partitions=5)
    keys = [f"order-{i}".encode() for i in range(20)]

    stored = await broker.append([out(k, k) for k in keys])

    for key, record in zip(keys, stored, strict=True):
        assert record.partition == DefaultPartitioner()(key, list(range(5)), list(range(5)))
        assert record.key == key
    assert len({r.partition for r in stored}) > 1


def test_the_in_memory_broker_does_not_import_aiokafka() -> None:
    import subprocess
    import sys

    code = "import sys, wirebus.brokers.memory; print('aiokafka' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)

    assert result.stdout.strip() == "False", result.stderr


async def test_one_keys_records_stay_on_one_partition_in_order() -> None:
    broker = InMemoryBroker(partitions=4)
    for i in range(10):
        await broker.append([out(b"same-key", str(i).encode()), out(None, b"noise")])

    same = [r for r in broker.records(TOPIC) if r.key == b"same-key"]
    assert {r.partition for r in same} == {broker.partition_for(b"same-key")}
    assert [r.value for r in same] == [str(i).encode() for i in range(10)]
    assert [r.offset for r in same] == sorted(r.offset for r in same)


async def test_unkeyed_records_go_round_robin() -> None:
    broker = InMemoryBroker(partitions=3)
    stored = await broker.append([out(None, str(i).encode()) for i in range(6)])

    partitions = [r.partition for r in stored]
    assert sorted(partitions) == [0, 0, 1, 1, 2, 2]
    assert set(partitions[:3]) == {0, 1, 2}
    assert partitions[3:] == partitions[:3]


async def test_offsets_count_up_per_partition_and_records_keep_what_was_sent() -> None:
    broker = InMemoryBroker(partitions=1)
    stored = await broker.append([out(b"k", b"a"), out(b"k", b"b")])

    assert [(r.topic, r.partition, r.offset) for r in stored] == [(TOPIC, 0, 0), (TOPIC, 0, 1)]
    assert stored[1].headers == (("h", b"b"),)
    assert stored[1].timestamp_ms > 0
    assert broker.records(TOPIC) == stored
    assert broker.topics() == [TOPIC]


async def test_the_publisher_encodes_events_with_their_key() -> None:
    registry = EventRegistry()
    registry.add(OrderCancelled)
    broker = InMemoryBroker(partitions=3)
    publisher = broker.publisher(registry, source="shop")
    event = OrderCancelled(order_id="o-1", reason="", cancelled_at=dt.datetime.now(dt.UTC))

    await publisher.publish(event)
    await publisher.publish_many([event, event])

    records = broker.records("shop.orders.v1")
    assert len(records) == 3
    assert {r.partition for r in records} == {broker.partition_for(b"o-1")}
    assert all(r.header("ce_type") == b"shop.orders.v1.OrderCancelled" for r in records)
    assert len({r.header("ce_id") for r in records}) == 3


# ---------------------------------------------------------------- consumer groups


async def test_a_consumer_reads_every_partition_from_the_start() -> None:
    broker = InMemoryBroker(partitions=2)
    await broker.append([out(None, b"a"), out(None, b"b"), out(None, b"c")])
    consumer = broker.consumer(group="g", topics=[TOPIC])
    await consumer.start()

    batch = await consumer.fetch(0)

    assert sorted(v for vs in values(batch).values() for v in vs) == [b"a", b"b", b"c"]
    assert await consumer.fetch(0) == {}


async def test_a_new_consumer_of_the_group_resumes_from_committed_offsets() -> None:
    broker = InMemoryBroker(partitions=1)
    await broker.append([out(b"k", b"0"), out(b"k", b"1"), out(b"k", b"2")])
    first = broker.consumer(group="g", topics=[TOPIC])
    await first.start()
    await first.fetch(0)
    await first.commit({(TOPIC, 0): 2})
    await first.stop()

    second = broker.consumer(group="g", topics=[TOPIC])
    await second.start()
    batch = await second.fetch(0)

    assert values(batch) == {(TOPIC, 0): [b"2"]}
    assert broker.committed("g", (TOPIC, 0)) == 2


async def test_uncommitted_records_are_delivered_again_to_a_new_consumer() -> None:
    broker = InMemoryBroker(partitions=1)
    await broker.append([out(b"k", b"0"), out(b"k", b"1")])
    first = broker.consumer(group="g", topics=[TOPIC])
    await first.start()
    assert values(await first.fetch(0)) == {(TOPIC, 0): [b"0", b"1"]}
    await first.stop()  # crashed before committing

    second = broker.consumer(group="g", topics=[TOPIC])
    await second.start()
    assert values(await second.fetch(0)) == {(TOPIC, 0): [b"0", b"1"]}


async def test_restarting_a_consumer_resumes_from_committed_offsets() -> None:
    broker = InMemoryBroker(partitions=1)
    await broker.append([out(b"k", b"0"), out(b"k", b"1")])
    consumer = broker.consumer(group="g", topics=[TOPIC])
    await consumer.start()
    await consumer.fetch(0)
    await consumer.commit({(TOPIC, 0): 1})
    await consumer.stop()
    await consumer.start()

    assert values(await consumer.fetch(0)) == {(TOPIC, 0): [b"1"]}


async def test_groups_keep_their_own_offsets() -> None:
    broker = InMemoryBroker(partitions=1)
    await broker.append([out(b"k", b"0")])
    a = broker.consumer(group="a", topics=[TOPIC])
    b = broker.consumer(group="b", topics=[TOPIC])
    await a.start()
    await b.start()
    await a.fetch(0)
    await a.commit({(TOPIC, 0): 1})

    assert values(await b.fetch(0)) == {(TOPIC, 0): [b"0"]}
    assert broker.committed("a", (TOPIC, 0)) == 1
    assert broker.committed("b", (TOPIC, 0)) == 0


async def test_a_consumer_reads_only_its_topics() -> None:
    broker = InMemoryBroker(partitions=1)
    await broker.append([out(b"k", b"mine"), out(b"k", b"other", topic="other")])
    consumer = broker.consumer(group="g", topics=[TOPIC])
    await consumer.start()

    assert values(await consumer.fetch(0)) == {(TOPIC, 0): [b"mine"]}


async def test_seek_reads_a_partition_again_from_an_offset() -> None:
    broker = InMemoryBroker(partitions=1)
    await broker.append([out(b"k", str(i).encode()) for i in range(4)])
    consumer = broker.consumer(group="g", topics=[TOPIC])
    await consumer.start()
    await consumer.fetch(0)

    await consumer.seek((TOPIC, 0), 1)

    assert values(await consumer.fetch(0)) == {(TOPIC, 0): [b"1", b"2", b"3"]}
    assert broker.committed("g", (TOPIC, 0)) == 0


async def test_a_fetch_returns_at_most_max_records_per_partition() -> None:
    broker = InMemoryBroker(partitions=1)
    await broker.append([out(b"k", str(i).encode()) for i in range(5)])
    consumer = broker.consumer(group="g", topics=[TOPIC])
    consumer.max_records = 2
    await consumer.start()

    assert values(await consumer.fetch(0)) == {(TOPIC, 0): [b"0", b"1"]}
    assert values(await consumer.fetch(0)) == {(TOPIC, 0): [b"2", b"3"]}
    assert values(await consumer.fetch(0)) == {(TOPIC, 0): [b"4"]}


# ---------------------------------------------------------------- waiting


async def test_fetch_waits_up_to_wait_when_there_is_nothing() -> None:
    broker = InMemoryBroker()
    consumer = broker.consumer(group="g", topics=[TOPIC])
    await consumer.start()

    started = time.monotonic()
    batch = await asyncio.wait_for(consumer.fetch(0.2), TIMEOUT)
    elapsed = time.monotonic() - started

    assert batch == {}
    assert 0.15 <= elapsed < 2


async def test_fetch_wakes_up_when_a_record_is_appended() -> None:
    broker = InMemoryBroker(partitions=1)
    consumer = broker.consumer(group="g", topics=[TOPIC])
    await consumer.start()

    started = time.monotonic()
    waiting = asyncio.create_task(consumer.fetch(30))
    await wait_until(lambda: broker.waiting == 1, within=TIMEOUT)
    assert not waiting.done()
    await broker.append([out(b"k", b"late")])
    batch = await asyncio.wait_for(waiting, TIMEOUT)

    assert values(batch) == {(TOPIC, 0): [b"late"]}
    assert time.monotonic() - started < 2


async def test_every_waiting_consumer_is_woken() -> None:
    broker = InMemoryBroker(partitions=1)
    consumers = [broker.consumer(group=g, topics=[TOPIC]) for g in ("a", "b")]
    for c in consumers:
        await c.start()

    waiting = [asyncio.create_task(c.fetch(30)) for c in consumers]
    await asyncio.sleep(0.02)
    await broker.append([out(b"k", b"x")])
    batches = await asyncio.wait_for(asyncio.gather(*waiting), TIMEOUT)

    assert [values(b) for b in batches] == [{(TOPIC, 0): [b"x"]}] * 2


async def test_topics_lists_only_topics_that_received_records() -> None:
    broker = InMemoryBroker()
    await broker.append([out(None, b"x", topic="written")])
    consumer = broker.consumer(group="g", topics=["only-subscribed"])
    await consumer.start()
    await consumer.fetch(0)

    assert broker.topics() == ["written"]
