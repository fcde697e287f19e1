"""Protobuf events on a real Kafka broker: publisher, consumer runner, DLQ, inbox, replay."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from shop.orders.v1 import orders_pb2

from tests.checkout import PYTHONPATH, ROOT
from tests.integration.conftest import read_records
from wirebus import App, Event, Router
from wirebus.codec import EventRegistry
from wirebus.consumer import EventProcessor
from wirebus.consumer_runner import ConsumerRunner
from wirebus.inbox import InMemoryInbox
from wirebus.inbox.sqlalchemy import SqlAlchemyInbox
from wirebus.kafka import KafkaConsumer, KafkaEventPublisher, ensure_topics
from wirebus.retry import Retry

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=dt.UTC)


def placed_type(topic: str) -> type[Event]:
    """An OrderPlaced dataclass on its own topic (so each test reads only its records)."""

    class Placed(Event, proto=orders_pb2.OrderPlaced, key="order_id", topic=topic):
        order_id: str
        customer_id: str
        total_cents: int
        placed_at: dt.datetime

    return Placed


async def until(predicate: Callable[[], bool], within: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class Harness:
    """An app with one recording handler, consumed by an in-process runner."""

    def __init__(self, bootstrap: str, topic: str, group: str, *, inbox: Any = None) -> None:
        self.bootstrap, self.topic, self.group = bootstrap, topic, group
        self.Placed = placed_type(topic)
        self.seen: list[tuple[str, int, int]] = []  # (order_id, total_cents, partition-less)
        self.fail_times: dict[str, int] = {}
        router = Router("it")
        Placed = self.Placed

        @router.handler(retry=Retry(attempts=2, initial_delay=0.01, jitter=False))
        async def record(event: Placed) -> None:  # type: ignore[valid-type]
            left = self.fail_times.get(event.order_id, 0)
            if left:
                self.fail_times[event.order_id] = left - 1
                raise RuntimeError(f"handler refuses {event.order_id}")
            self.seen.append((event.order_id, event.total_cents, 0))

        self.app = App(name="it", routers=[router])
        self.registry = self.app.registry()
        self.inbox = inbox or InMemoryInbox()

    def event(self, order_id: str, n: int = 0) -> Any:
        return self.Placed(order_id=order_id, customer_id="c", total_cents=n, placed_at=T0)

    def publisher(self, *, own_batches: bool = True) -> KafkaEventPublisher:
        return KafkaEventPublisher(
            self.bootstrap, self.registry, source="it-tests", own_batches=own_batches
        )

    async def run(self, stop_when: Callable[[], bool], within: float = 90) -> ConsumerRunner:
        await ensure_topics(self.bootstrap, [self.topic, self.topic + ".dlq"])
        async with KafkaEventPublisher(self.bootstrap, self.registry, source="it") as dlq:
            mediator = self.app.mediator()
            processor = EventProcessor(
                mediator, self.registry, group=self.group, inbox=self.inbox, dead_letters=dlq
            )
            port = KafkaConsumer(self.bootstrap, group=self.group, topics=[self.topic])
            runner = ConsumerRunner(port, processor, poll_timeout=0.2)
            await runner.start()
            task = asyncio.create_task(runner.run())
            try:
                await until(stop_when, within, "the consumer to catch up")
            finally:
                await runner.stop()
                await asyncio.wait_for(task, 60)
                await mediator.close()
        return runner


@pytest.fixture
def harness(bootstrap: str, fresh: str) -> Harness:
    return Harness(bootstrap, f"{fresh}.orders", f"{fresh}-group")


async def test_published_record_is_bare_protobuf_with_cloudevents_headers(harness: Harness):
    async with harness.publisher() as publisher:
        await publisher.publish(harness.event("order-1", 700), subject="orders/order-1")
    (record,) = await read_records(harness.bootstrap, harness.topic, 1)
    assert record.key == b"order-1"
    decoded = orders_pb2.OrderPlaced.FromString(record.value)
    assert (decoded.order_id, decoded.total_cents) == ("order-1", 700)
    assert decoded.SerializeToString() == record.value  # nothing around the message
    headers = dict(record.headers)
    assert headers["ce_specversion"] == b"1.0"
    assert uuid.UUID(headers["ce_id"].decode()).version == 4
    assert headers["ce_source"] == b"it-tests"
    assert headers["ce_type"] == b"shop.orders.v1.OrderPlaced"
    assert dt.datetime.fromisoformat(headers["ce_time"].decode().replace("Z", "+00:00")).tzinfo
    assert headers["ce_time"].endswith(b"Z")
    assert headers["content-type"] == b"application/protobuf"
    assert headers["ce_dataschema"] == b"type.googleapis.com/shop.orders.v1.OrderPlaced"
    assert headers["ce_subject"] == b"orders/order-1"


async def test_round_trip_publish_consume_runs_the_handler_once_per_event(harness: Harness):
    async with harness.publisher() as publisher:
        await publisher.publish_many([harness.event(f"o{i}", i) for i in range(20)])
    runner = await harness.run(lambda: len(harness.seen) >= 20)
    assert sorted(o for o, _, _ in harness.seen) == sorted(f"o{i}" for i in range(20))
    assert runner.outcomes == {"handled": 20}


async def test_per_key_order_holds_over_1000_events_across_3_partitions(harness: Harness):
    keys = [f"order-{k}" for k in range(25)]
    events = [harness.event(keys[i % len(keys)], i) for i in range(1000)]
    async with harness.publisher() as publisher:
        await ensure_topics(harness.bootstrap, [harness.topic], partitions=3)
        for start in range(0, 1000, 100):
            await publisher.publish_many(events[start : start + 100])
    stored = await read_records(harness.bootstrap, harness.topic, 1000)
    assert {r.partition for r in stored} == {0, 1, 2}
    await harness.run(lambda: len(harness.seen) >= 1000)
    by_key: dict[str, list[int]] = defaultdict(list)
    for order_id, n, _ in harness.seen:
        by_key[order_id].append(n)
    for key, sequence in by_key.items():
        assert sequence == sorted(sequence), f"{key} out of order"
    assert sum(len(s) for s in by_key.values()) == 1000


async def test_garbage_and_headerless_records_are_dead_lettered_and_later_records_handled(
    harness: Harness,
):
    await ensure_topics(harness.bootstrap, [harness.topic, harness.topic + ".dlq"], partitions=1)
    good = harness.registry.by_type(harness.Placed)
    assert good is not None
    async with harness.publisher() as publisher:
        record = publisher.encoder.record(harness.event("before", 1))
        garbage = type(record)(record.topic, b"k1", b"\xff\xfe not protobuf", record.headers)
        headerless = type(record)(record.topic, b"k2", record.value, ())
        await publisher.send_records([record, garbage, headerless])
        await publisher.publish(harness.event("after", 2))
    await harness.run(lambda: len(harness.seen) >= 2)
    assert [o for o, _, _ in harness.seen] == ["before", "after"]
    dead = await read_records(harness.bootstrap, harness.topic + ".dlq", 2)
    assert [r.key for r in dead] == [b"k1", b"k2"]
    first, second = (dict(r.headers) for r in dead)
    assert dead[0].value == b"\xff\xfe not protobuf"
    assert first["wirebus_error_type"] == b"UndecodableEvent"
    assert first["wirebus_original_topic"] == harness.topic.encode()
    assert first["wirebus_original_partition"] == b"0"
    assert first["wirebus_original_offset"] == b"1"
    assert first["wirebus_attempts"] == b"0"
    assert first["ce_type"] == b"shop.orders.v1.OrderPlaced"  # original headers kept
    assert second["wirebus_error_type"] == b"MalformedEvent"
    assert b"ce_id" in second["wirebus_error_message"]
    assert second["wirebus_original_offset"] == b"2"


async def test_a_handler_failing_every_attempt_is_dead_lettered_with_attempts(harness: Harness):
    harness.fail_times["stubborn"] = 99
    async with harness.publisher() as publisher:
        await publisher.publish_many([harness.event("stubborn", 1), harness.event("fine", 2)])
    runner = await harness.run(
        lambda: len(harness.seen) >= 1 and sum(harness.fail_times.values()) <= 97
    )
    (dead,) = await read_records(harness.bootstrap, harness.topic + ".dlq", 1)
    headers = dict(dead.headers)
    assert headers["wirebus_error_type"] == b"RuntimeError"
    assert headers["wirebus_error_message"] == b"handler refuses stubborn"
    assert headers["wirebus_attempts"] == b"2"
    assert [o for o, _, _ in harness.seen] == ["fine"]
    assert runner.outcomes == {"dead_lettered": 1, "handled": 1}


async def test_dlq_replay_sends_the_record_back_with_its_ce_id(harness: Harness):
    harness.fail_times["later"] = 2  # both attempts fail: dead-lettered
    async with harness.publisher() as publisher:
        await publisher.publish(harness.event("later", 5))
    await harness.run(lambda: sum(harness.fail_times.values()) == 0)
    (dead,) = await read_records(harness.bootstrap, harness.topic + ".dlq", 1)
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "wirebus", "dlq", "replay", "--topic", harness.topic + ".dlq"],
        env={**os.environ, "WIREBUS_KAFKA_BOOTSTRAP": harness.bootstrap, "PYTHONPATH": PYTHONPATH},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "replayed 1 record(s)" in result.stdout
    original, replayed = await read_records(harness.bootstrap, harness.topic, 2)
    assert replayed.value == original.value
    assert replayed.key == b"later"
    assert dict(replayed.headers)["ce_id"] == dict(dead.headers)["ce_id"]
    assert not any(k.startswith("wirebus_") for k, _ in replayed.headers)
    await harness.run(lambda: len(harness.seen) >= 1)  # the handler works now
    assert [o for o, _, _ in harness.seen] == ["later"]


async def test_dlq_replay_refuses_a_topic_that_is_not_a_dlq_and_lists_in_a_dry_run(
    harness: Harness,
):
    def wirebus(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "WIREBUS_KAFKA_BOOTSTRAP": harness.bootstrap, "PYTHONPATH": PYTHONPATH}
        return subprocess.run(
            [sys.executable, "-m", "wirebus", "dlq", "replay", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    harness.fail_times["twice"] = 2
    async with harness.publisher() as publisher:
        await publisher.publish(harness.event("twice", 7))
    await harness.run(lambda: sum(harness.fail_times.values()) == 0)
    await read_records(harness.bootstrap, harness.topic + ".dlq", 1)

    refused = await asyncio.to_thread(wirebus, "--topic", harness.topic)
    assert refused.returncode == 1
    assert f"Error: '{harness.topic}' is not a dead-letter topic" in refused.stderr
    assert f"did you mean '{harness.topic}.dlq'" in refused.stderr

    listed = await asyncio.to_thread(wirebus, "--topic", harness.topic + ".dlq", "--dry-run")
    assert listed.returncode == 0, listed.stderr
    assert f"-> {harness.topic} key=twice" in listed.stdout
    assert "would replay 1 record(s)" in listed.stdout
    assert (
        len(await read_records(harness.bootstrap, harness.topic, 1, grace=1)) == 1
    )  # nothing sent

    replayed = await asyncio.to_thread(wirebus, "--topic", harness.topic + ".dlq")
    assert "replayed 1 record(s)" in replayed.stdout, replayed.stderr


async def test_the_postgres_inbox_drops_a_redelivered_event(
    bootstrap: str, fresh: str, database_url: str
):
    inbox = SqlAlchemyInbox(database_url)
    await inbox.create_schema()
    harness = Harness(bootstrap, f"{fresh}.orders", f"{fresh}-group", inbox=inbox)
    try:
        async with harness.publisher() as publisher:
            record = publisher.encoder.record(harness.event("once", 1))
            await publisher.send_records([record, record])  # same ce_id twice
            await publisher.publish(harness.event("marker", 2))
        runner = await harness.run(lambda: len(harness.seen) >= 2)
        assert [o for o, _, _ in harness.seen] == ["once", "marker"]
        assert runner.outcomes == {"handled": 2, "duplicate": 1}
    finally:
        await inbox.close()


def test_a_consumer_killed_and_restarted_loses_nothing(bootstrap: str, fresh: str, tmp_path: Path):
    topic, out = f"{fresh}.orders", tmp_path / "handled.txt"
    ids = [f"k{i}" for i in range(1500)]
    Placed = placed_type(topic)
    registry = EventRegistry()
    registry.add(Placed)

    async def produce() -> None:
        await ensure_topics(bootstrap, [topic, topic + ".dlq"])
        async with KafkaEventPublisher(bootstrap, registry, source="it") as publisher:
            events = [Placed(order_id=i, customer_id="c", total_cents=1, placed_at=T0) for i in ids]
            for start in range(0, len(events), 250):
                await publisher.publish_many(events[start : start + 250])

    asyncio.run(produce())
    env = {
        **os.environ,
        "PYTHONPATH": PYTHONPATH,
        "WIREBUS_KAFKA_BOOTSTRAP": bootstrap,
        "WIREBUS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/inbox.db",
        "RECORDER_TOPIC": topic,
        "RECORDER_FILE": str(out),
    }
    command = [
        sys.executable, "-m", "wirebus", "consume", "tests.integration.apps.recorder:app",
        "--group", f"{fresh}-group", "--log-level", "warning",
    ]  # fmt: skip

    def handled() -> set[str]:
        return set(out.read_text().split()) if out.exists() else set()

    first = subprocess.Popen(command, env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while len(handled()) < 200 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    assert 0 < len(handled()) < len(ids), "the kill should land mid-stream"

    second = subprocess.Popen(command, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while handled() != set(ids) and time.monotonic() < deadline and second.poll() is None:
            time.sleep(0.1)
        assert handled() == set(ids), f"missing {len(set(ids) - handled())} events"
    finally:
        second.send_signal(signal.SIGTERM)
        _, stderr = second.communicate(timeout=60)
    assert second.returncode == 0, stderr


@pytest.mark.parametrize("own_batches", [True, False], ids=["own-batches", "public-send"])
async def test_a_record_refused_as_too_large_holds_back_later_records_of_its_key(
    harness: Harness, own_batches: bool
):
    from wirebus.broker import HeldBack, OutgoingRecord, PublishError

    await ensure_topics(harness.bootstrap, [harness.topic])
    big = OutgoingRecord(harness.topic, b"k1", b"x" * (2 * 1024 * 1024), ())
    after = OutgoingRecord(harness.topic, b"k1", b"small", ())
    other = OutgoingRecord(harness.topic, b"k2", b"small", ())
    async with harness.publisher(own_batches=own_batches) as publisher:
        assert publisher.batching is own_batches
        results = await publisher.send_records_settled([big, after, other])
    refused, held, sent = results
    assert isinstance(refused, PublishError)
    assert not refused.retriable  # too large: retrying the same bytes cannot help
    assert "MessageSizeTooLarge" in str(refused)
    assert isinstance(held, HeldBack)  # not sent, so it cannot overtake the refused one
    assert sent is None
    (record,) = await read_records(harness.bootstrap, harness.topic, 1)
    assert record.key == b"k2"


@pytest.mark.parametrize("own_batches", [True, False], ids=["own-batches", "public-send"])
async def test_each_key_lands_on_the_partition_the_java_client_would_choose(
    harness: Harness, own_batches: bool
):
    from wirebus.brokers.partitioner import partition_for

    await ensure_topics(harness.bootstrap, [harness.topic], partitions=3)
    events = [harness.event(f"order-{i}", i) for i in range(300)]
    async with harness.publisher(own_batches=own_batches) as publisher:
        assert publisher.batching is own_batches
        await publisher.publish_many(events[:10])  # a few: through the producer's own batches
        await publisher.publish_many(events[10:])  # many: as batches of our own (or send())
    stored = await read_records(harness.bootstrap, harness.topic, 300)
    assert len(stored) == 300
    for record in stored:
        assert record.partition == partition_for(record.key, [0, 1, 2]), record.key


async def test_through_the_public_send_path_each_keys_events_arrive_in_order(harness: Harness):
    await ensure_topics(harness.bootstrap, [harness.topic], partitions=3)
    events = [harness.event(f"order-{i % 7}", i) for i in range(400)]
    async with harness.publisher(own_batches=False) as publisher:
        await publisher.publish_many(events)  # > 32 per partition: would be own batches
    stored = await read_records(harness.bootstrap, harness.topic, 400)
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for record in sorted(stored, key=lambda r: (r.partition, r.offset)):
        by_key[record.key].append(orders_pb2.OrderPlaced.FromString(record.value).total_cents)
    assert dict(by_key) == {f"order-{k}".encode(): list(range(k, 400, 7)) for k in range(7)}


async def test_a_producer_renewed_while_the_broker_is_away_is_started_by_a_later_send(
    harness: Harness,
):
    """After the broker lost the producer's sequence state, the publisher starts a new
    producer; if the broker cannot be reached for that, sends fail retriably (nothing
    is lost, the relay backs off) until a later send starts it."""
    from wirebus.broker import OutgoingRecord, PublishError

    await ensure_topics(harness.bootstrap, [harness.topic])
    record = OutgoingRecord(harness.topic, b"k", b"v", ())
    async with harness.publisher() as publisher:
        reachable = publisher._options["bootstrap_servers"]
        publisher._options["bootstrap_servers"] = "127.0.0.1:1"  # the broker is away
        publisher._options["request_timeout_ms"] = 2000
        await publisher._renew_producer()  # cannot connect: no producer yet
        (away,) = await publisher.send_records_settled([record])
        assert isinstance(away, PublishError)
        assert away.retriable

        publisher._options["bootstrap_servers"] = reachable  # the broker is back
        assert await publisher.send_records_settled([record]) == [None]
    (published,) = await read_records(harness.bootstrap, harness.topic, 1)
    assert published.value == b"v"
