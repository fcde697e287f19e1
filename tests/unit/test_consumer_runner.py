"""ConsumerRunner over the in-memory broker: order, commits, stop and interruptions.

Every runner is stopped and awaited with a timeout, so a missed wake-up fails
a test instead of hanging the suite.
"""

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
from shop.orders.v1 import orders_pb2

from wirebus import App, Event, LifecycleError, Router
from wirebus.broker import OutgoingRecord, PublishError
from wirebus.brokers.memory import InMemoryBroker
from wirebus.cloudevents import Attributes
from wirebus.consumer import EventProcessor
from wirebus.consumer_runner import ConsumerRunner
from wirebus.inbox import InMemoryInbox
from wirebus.retry import Retry
from wirebus.testing import wait_until

TIMEOUT = 5
NOW = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
TOPIC = "shop.orders.v1"
GROUP = "g"


class Cancelled(Event, proto=orders_pb2.OrderCancelled, key="order_id"):
    order_id: str
    reason: str
    cancelled_at: dt.datetime


class FlakyDeadLetters:
    """Fails the first ``failures`` sends, then writes to the broker; notes commits seen."""

    def __init__(self, broker: InMemoryBroker, failures: int) -> None:
        self.broker = broker
        self.failures = failures
        self.calls = 0
        self.committed_when_failing: list[int] = []

    async def publish(self, event: Any, *, subject: str | None = None) -> None:
        raise NotImplementedError

    async def publish_many(self, events: Any) -> None:
        raise NotImplementedError

    async def send_records(self, records: Sequence[OutgoingRecord]) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            tp = (TOPIC, self.broker.partition_for(records[0].key or b""))
            self.committed_when_failing.append(self.broker.committed(GROUP, tp))
            raise PublishError(records[0].topic, "broker unreachable")
        await self.broker.append(records)


class FlakyInbox(InMemoryInbox):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.calls = 0

    async def seen_many(self, group: str, event_ids: Sequence[str]) -> set[str]:
        self.calls += 1
        if self.calls <= self.failures:
            raise OSError("database restarting")
        return await super().seen_many(group, event_ids)


def app_with(*handlers: Callable[..., Any]) -> App:
    router = Router("test")
    for h in handlers:
        router.handler(h)
    return App(name="test", routers=[router])


def runner_for(
    app: App,
    broker: InMemoryBroker,
    *,
    dead_letters: Any = None,
    inbox: InMemoryInbox | None = None,
    retry: Retry | None = None,
) -> ConsumerRunner:
    processor = EventProcessor(
        app.mediator(),
        app.registry(),
        group=GROUP,
        inbox=inbox or InMemoryInbox(),
        dead_letters=dead_letters or broker.publisher(app.registry(), source="test"),
        retry=retry,
        sleep=_no_sleep,
    )
    port = broker.consumer(group=GROUP, topics=[TOPIC])
    return ConsumerRunner(port, processor, poll_timeout=0.05, failure_pause=0.01)


async def _no_sleep(_: float) -> None:
    return None


@contextlib.asynccontextmanager
async def running(runner: ConsumerRunner) -> AsyncIterator[asyncio.Task[None]]:
    await runner.start()
    task = asyncio.create_task(runner.run())
    try:
        yield task
    finally:
        await runner.stop()
        await asyncio.wait_for(task, TIMEOUT)


async def until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` until it is true; fail after ``TIMEOUT`` seconds."""
    await wait_until(condition, within=TIMEOUT, interval=0.005)


def all_committed(broker: InMemoryBroker) -> bool:
    """The group's committed offsets are at the end of every partition of TOPIC."""
    ends = [0] * broker.partitions
    for record in broker.records(TOPIC):
        ends[record.partition] += 1
    return all(broker.committed(GROUP, (TOPIC, p)) == end for p, end in enumerate(ends))


def cancelled(order_id: str, n: int = 0) -> Cancelled:
    return Cancelled(order_id=order_id, reason=str(n), cancelled_at=NOW)


def partition_of(key: str, broker: InMemoryBroker) -> tuple[str, int]:
    return (TOPIC, broker.partition_for(key.encode()))


def unknown_record(key: bytes) -> OutgoingRecord:
    attrs = Attributes.new(source="elsewhere", type="shop.orders.v1.Unheard")
    return OutgoingRecord(TOPIC, key, b"", tuple(attrs.headers()))


# ---------------------------------------------------------------- order and commits


async def test_records_of_each_partition_are_processed_in_order_and_committed() -> None:
    seen: list[tuple[str, int]] = []

    async def on_cancelled(event: Cancelled) -> None:
        await asyncio.sleep(0)  # let partitions interleave
        seen.append((event.order_id, int(event.reason)))

    app = app_with(on_cancelled)
    broker = InMemoryBroker(partitions=3)
    publisher = broker.publisher(app.registry(), source="test")
    keys = ["o-1", "o-2", "o-3", "o-4"]
    for n in range(8):
        await publisher.publish_many([cancelled(k, n) for k in keys])
    runner = runner_for(app, broker)

    async with running(runner):
        await until(lambda: len(seen) == 32)

    for key in keys:
        assert [n for k, n in seen if k == key] == list(range(8))
    for partition in range(3):
        tp = (TOPIC, partition)
        assert broker.committed(GROUP, tp) == sum(
            1 for r in broker.records(TOPIC) if r.partition == partition
        )
    assert runner.outcomes == {"handled": 32}


async def test_records_appended_while_running_are_processed() -> None:
    seen: list[str] = []

    async def on_cancelled(event: Cancelled) -> None:
        seen.append(event.order_id)

    app = app_with(on_cancelled)
    broker = InMemoryBroker()
    publisher = broker.publisher(app.registry(), source="test")

    async with running(runner_for(app, broker)):
        await publisher.publish(cancelled("early"))
        await until(lambda: seen == ["early"])  # the runner is in its loop now
        await publisher.publish(cancelled("late"))
        await until(lambda: seen == ["early", "late"])

    tp = partition_of("late", broker)
    on_its_partition = [r for r in broker.records(TOPIC) if (r.topic, r.partition) == tp]
    assert broker.committed(GROUP, tp) == len(on_its_partition)


async def test_an_offset_is_committed_only_after_its_record_reached_an_outcome() -> None:
    entered = asyncio.Event()
    gate = asyncio.Event()

    async def slow(event: Cancelled) -> None:
        if event.order_id == "o-1":
            entered.set()
            await gate.wait()

    app = app_with(slow)
    broker = InMemoryBroker()
    tp = partition_of("o-1", broker)
    # a record of another partition, fetched in the same batch and handled at once
    other = next(f"o-{n}" for n in range(2, 100) if partition_of(f"o-{n}", broker) != tp)
    publisher = broker.publisher(app.registry(), source="test")
    await publisher.publish_many([cancelled("o-1"), cancelled(other)])
    runner = runner_for(app, broker)

    async with running(runner):
        await asyncio.wait_for(entered.wait(), TIMEOUT)
        # the batch got as far as another record's outcome: had it committed o-1 on
        # fetch (or with that outcome), the commit would be there by now
        await until(lambda: runner.outcomes == {"handled": 1})
        assert broker.committed(GROUP, tp) == 0
        gate.set()
        await until(lambda: broker.committed(GROUP, tp) == 1)


async def test_stop_finishes_the_batch_in_hand_commits_and_returns() -> None:
    entered = asyncio.Event()
    gate = asyncio.Event()
    handled: list[str] = []

    async def slow(event: Cancelled) -> None:
        entered.set()
        await gate.wait()
        handled.append(event.order_id)

    app = app_with(slow)
    broker = InMemoryBroker()
    await broker.publisher(app.registry(), source="test").publish(cancelled("o-1"))
    runner = runner_for(app, broker)
    await runner.start()
    task = asyncio.create_task(runner.run())
    handled_when_run_returned: list[list[str]] = []
    task.add_done_callback(lambda _: handled_when_run_returned.append(list(handled)))
    await asyncio.wait_for(entered.wait(), TIMEOUT)

    await runner.stop()
    gate.set()
    await asyncio.wait_for(task, TIMEOUT)

    assert handled_when_run_returned == [["o-1"]]  # run() waited for the handler
    assert handled == ["o-1"]
    assert broker.committed(GROUP, partition_of("o-1", broker)) == 1


async def test_stop_of_an_idle_runner_returns_promptly() -> None:
    seen: list[str] = []

    async def on_cancelled(event: Cancelled) -> None:
        seen.append(event.order_id)

    app = app_with(on_cancelled)
    broker = InMemoryBroker()
    runner = runner_for(app, broker)
    await runner.start()
    task = asyncio.create_task(runner.run())
    await broker.publisher(app.registry(), source="test").publish(cancelled("only"))
    await until(lambda: seen == ["only"])  # in its loop, nothing left to fetch: idle

    await runner.stop()
    await asyncio.wait_for(task, 1)

    assert task.result() is None
    assert runner.outcomes == {"handled": 1}


async def test_a_new_runner_of_the_group_does_not_process_committed_records_again() -> None:
    seen: list[str] = []

    async def on_cancelled(event: Cancelled) -> None:
        seen.append(event.order_id)

    app = app_with(on_cancelled)
    broker = InMemoryBroker()
    publisher = broker.publisher(app.registry(), source="test")
    await publisher.publish(cancelled("first"))
    async with running(runner_for(app, broker)):
        await until(lambda: seen == ["first"])

    await publisher.publish(cancelled("second"))
    async with running(runner_for(app, broker)):
        await until(lambda: len(seen) == 2)
        # committed to the end of every partition: whatever it fetched, it processed
        await until(lambda: all_committed(broker))

    assert seen == ["first", "second"]


# ---------------------------------------------------------------- interruptions


async def test_an_interrupted_record_is_not_committed_and_is_retried_until_dead_lettered() -> None:
    handled: list[str] = []

    async def on_cancelled(event: Cancelled) -> None:
        handled.append(event.order_id)

    app = app_with(on_cancelled)
    broker = InMemoryBroker(partitions=1)
    flaky = FlakyDeadLetters(broker, failures=3)
    await broker.append([unknown_record(b"o-1")])
    await broker.publisher(app.registry(), source="test").publish(cancelled("o-1"))
    runner = runner_for(app, broker, dead_letters=flaky)

    async with running(runner):
        await until(lambda: runner.outcomes.get("handled") == 1)

    assert flaky.calls == 4
    assert flaky.committed_when_failing == [0, 0, 0]
    assert len(broker.records(TOPIC + ".dlq")) == 1
    assert handled == ["o-1"]
    assert broker.committed(GROUP, (TOPIC, 0)) == 2
    assert runner.outcomes == {"dead_lettered": 1, "handled": 1}


async def test_records_behind_an_interrupted_one_wait_for_it() -> None:
    order: list[str] = []

    async def on_cancelled(event: Cancelled) -> None:
        order.append(f"handled {event.order_id}")

    class Recording(FlakyDeadLetters):
        async def send_records(self, records: Sequence[OutgoingRecord]) -> None:
            await super().send_records(records)
            order.append("dead-lettered")

    app = app_with(on_cancelled)
    broker = InMemoryBroker(partitions=1)
    await broker.append([unknown_record(b"k")])
    await broker.publisher(app.registry(), source="test").publish(cancelled("k"))
    runner = runner_for(app, broker, dead_letters=Recording(broker, failures=2))

    async with running(runner):
        await until(lambda: len(order) == 2)

    assert order == ["dead-lettered", "handled k"]


async def test_an_interrupted_record_is_handled_once_the_inbox_is_back() -> None:
    handled: list[str] = []

    async def on_cancelled(event: Cancelled) -> None:
        handled.append(event.order_id)

    app = app_with(on_cancelled)
    broker = InMemoryBroker()
    inbox = FlakyInbox(failures=2)
    await broker.publisher(app.registry(), source="test").publish(cancelled("o-1"))
    runner = runner_for(app, broker, inbox=inbox)

    async with running(runner):
        await until(lambda: runner.outcomes.get("handled") == 1)

    assert inbox.calls == 3
    assert handled == ["o-1"]
    assert broker.committed(GROUP, partition_of("o-1", broker)) == 1
    assert broker.records(TOPIC + ".dlq") == []


async def test_other_partitions_commit_while_one_is_interrupted() -> None:
    handled: list[str] = []

    async def on_cancelled(event: Cancelled) -> None:
        handled.append(event.order_id)

    app = app_with(on_cancelled)
    broker = InMemoryBroker(partitions=2)
    # keys on two different partitions
    bad_key, good_key = (
        "a",
        next(k for k in "bcdefgh" if partition_of(k, broker) != partition_of("a", broker)),
    )
    flaky = FlakyDeadLetters(broker, failures=1_000_000)
    await broker.append([unknown_record(bad_key.encode())])
    await broker.publisher(app.registry(), source="test").publish(cancelled(good_key))
    runner = runner_for(app, broker, dead_letters=flaky)

    async with running(runner):
        await until(lambda: handled == [good_key] and flaky.calls >= 3)

    assert broker.committed(GROUP, partition_of(good_key, broker)) == 1
    assert broker.committed(GROUP, partition_of(bad_key, broker)) == 0


async def test_an_always_failing_handler_is_dead_lettered_and_committed() -> None:
    async def failing(event: Cancelled) -> None:
        raise ConnectionError("down")

    app = app_with(failing)
    broker = InMemoryBroker()
    await broker.publisher(app.registry(), source="test").publish(cancelled("o-1"))
    runner = runner_for(app, broker, retry=Retry(attempts=2))

    async with running(runner):
        await until(lambda: runner.outcomes.get("dead_lettered") == 1)

    [dead] = broker.records(TOPIC + ".dlq")
    assert dead.header("wirebus_attempts") == b"2"
    assert broker.committed(GROUP, partition_of("o-1", broker)) == 1


# ---------------------------------------------------------------- lifecycle


async def test_run_before_start_is_a_lifecycle_error() -> None:
    runner = runner_for(app_with(), InMemoryBroker())
    with pytest.raises(LifecycleError, match="start the consumer before running it"):
        await runner.run()


async def test_a_stopped_runner_cannot_start_again() -> None:
    runner = runner_for(app_with(), InMemoryBroker())
    async with running(runner):
        pass
    with pytest.raises(LifecycleError, match="cannot be started again"):
        await runner.start()


async def test_the_runner_is_an_async_context_manager() -> None:
    broker = InMemoryBroker()
    runner = runner_for(app_with(), broker)
    async with runner as same:
        assert same is runner
        with pytest.raises(LifecycleError):
            await runner.start()
    with pytest.raises(LifecycleError, match="start the consumer before running it"):
        await runner.run()


# ---------------------------------------------------------------- hooks


async def test_on_outcome_is_told_of_every_record_and_the_outcome_it_reached_in_order() -> None:
    async def on_cancelled(event: Cancelled) -> None:
        if event.reason == "bad":
            raise ValueError("no such order")

    app = app_with(on_cancelled)
    broker = InMemoryBroker(partitions=1)
    publisher = broker.publisher(app.registry(), source="test")
    await publisher.publish(cancelled("o-1"))
    await publisher.publish(Cancelled(order_id="o-2", reason="bad", cancelled_at=NOW))
    await broker.append([unknown_record(b"o-3")])
    reached: list[tuple[int, str]] = []
    processor = runner_for(app, broker, retry=Retry(attempts=1)).processor
    runner = ConsumerRunner(
        broker.consumer(group=GROUP, topics=[TOPIC]),
        processor,
        poll_timeout=0.05,
        on_outcome=lambda record, outcome: reached.append((record.offset, outcome)),
    )

    async with running(runner):
        await until(lambda: len(reached) == 3)

    assert reached == [(0, "handled"), (1, "dead_lettered"), (2, "dead_lettered")]
    assert runner.outcomes == {"handled": 1, "dead_lettered": 2}


async def test_stop_wakes_a_runner_waiting_for_records_instead_of_waiting_out_its_poll() -> None:
    broker = InMemoryBroker()
    processor = runner_for(app_with(), broker).processor
    port = broker.consumer(group=GROUP, topics=[TOPIC])
    runner = ConsumerRunner(port, processor, poll_timeout=60.0)
    await runner.start()
    task = asyncio.create_task(runner.run())
    await until(lambda: broker.waiting == 1)  # in a fetch that would wait a minute

    await runner.stop()
    await asyncio.wait_for(task, TIMEOUT)

    assert task.result() is None
    assert broker.waiting == 0


async def test_waking_an_in_memory_consumer_ends_its_waiting_fetch_with_what_is_there() -> None:
    broker = InMemoryBroker()
    consumer = broker.consumer(group=GROUP, topics=[TOPIC])
    await consumer.start()
    fetching = asyncio.create_task(consumer.fetch(60.0))
    await until(lambda: broker.waiting == 1)

    consumer.wake()

    assert await asyncio.wait_for(fetching, TIMEOUT) == {}
    assert broker.waiting == 0


async def test_a_wake_ends_one_fetch_only_the_next_one_waits_for_records_again() -> None:
    async def on_cancelled(event: Cancelled) -> None:
        return None

    app = app_with(on_cancelled)
    broker = InMemoryBroker(partitions=1)
    consumer = broker.consumer(group=GROUP, topics=[TOPIC])
    await consumer.start()
    consumer.wake()  # before any fetch: the next one returns at once
    assert await asyncio.wait_for(consumer.fetch(60.0), TIMEOUT) == {}

    fetching = asyncio.create_task(consumer.fetch(60.0))
    await until(lambda: broker.waiting == 1)
    await broker.publisher(app.registry(), source="test").publish(cancelled("o-1"))

    batch = await asyncio.wait_for(fetching, TIMEOUT)
    assert [r.key for r in batch[(TOPIC, 0)]] == [b"o-1"]
