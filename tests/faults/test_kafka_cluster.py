"""Hard faults on a real three-broker Kafka cluster and a real PostgreSQL (issue 12).

The cluster is ``scripts/services start kafka-cluster`` (three KRaft nodes,
each broker + controller, on their own ports); the topic has replication
factor 3 and ``min.insync.replicas=2``, and the relay's producer is idempotent
with ``acks=all``. While 10,000 commands go through the gateway, a broker is
killed with SIGKILL and restarted, then another once the first has rejoined
every ISR, then the PostgreSQL server is SIGKILLed and restarted (crash
recovery). A consumer group of two ``wirebus consume`` processes handles the
events into a table through the inbox.

It reuses the machinery of :mod:`tests.faults.test_outbox_crashes` (World,
Reader, check_stream). Commands in flight when PostgreSQL dies fail with
UNAVAILABLE; the driver then asks the database (once it is back) whether the
command committed, and goes on or sends it again, so every aggregate still
gets exactly its sequence 1..n.

The test kills the PostgreSQL of ``scripts/services``: on a shared machine,
run it against a server of its own (and a cluster of its own), e.g.::

    WIREBUS_SERVICES_DIR=/tmp/pgb WIREBUS_PG_PORT=15433 WIREBUS_KEEP_SERVICES=1 \
        pytest tests/faults/test_kafka_cluster.py -s

The cluster is started on demand and stopped after the module when this test
started it (unless ``WIREBUS_KEEP_SERVICES=1``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import grpc.aio
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from shop.orders.v1 import orders_pb2_grpc
from sqlalchemy.engine import make_url

from tests.faults.apps import handled, sequencer
from tests.faults.test_outbox_crashes import (
    BATCH_SIZE,
    Child,
    Reader,
    World,
    check_stream,
    expected_pairs,
    free_port,
    outbox_counts,
    plan_of,
    services_cmd,
    step,
)
from tests.integration.conftest import parse_env, run_services
from wirebus.db import Database
from wirebus.testing import wait_until
from wirebus.testing.databases import create_database, drop_database

pytestmark = pytest.mark.integration

CONSUMER_APP = "tests.faults.apps.handled:app"
COMMANDS = 10_000
PARTITIONS = 6
RATE = float(os.environ.get("WIREBUS_CLUSTER_TEST_RATE", "110"))  # commands/s started, at most
FAULTS = 3  # two broker crashes and one database crash: what may re-publish a batch


# ---------------------------------------------------------------- services


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """The bootstrap list of the three-node cluster, started on demand (and stopped after,
    when this test started it, unless ``WIREBUS_KEEP_SERVICES=1``)."""
    was_running = run_services("status", "kafka-cluster").returncode == 0
    started_at = time.monotonic()
    started = run_services("start", "kafka-cluster", timeout=900)
    assert started.returncode == 0, f"scripts/services start kafka-cluster: {started.stderr}"
    print(f"\ncluster up in {time.monotonic() - started_at:.1f}s (was running: {was_running})")
    env = run_services("env", "kafka-cluster")
    assert env.returncode == 0, env.stderr
    yield parse_env(env.stdout)["WIREBUS_KAFKA_CLUSTER_BOOTSTRAP"]
    if not was_running and os.environ.get("WIREBUS_KEEP_SERVICES") != "1":
        run_services("stop", "kafka-cluster", timeout=120)


@pytest.fixture(scope="module")
def postgres() -> str:
    """The admin URL of the PostgreSQL of ``scripts/services`` (the one this test kills)."""
    started = run_services("start", "postgres", timeout=900)
    assert started.returncode == 0, f"scripts/services start postgres: {started.stderr}"
    env = run_services("env")
    assert env.returncode == 0, env.stderr
    return parse_env(env.stdout)["WIREBUS_DATABASE_URL"]


async def create_replicated_topics(bootstrap: str, topics: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    t,
                    num_partitions=PARTITIONS,
                    replication_factor=3,
                    topic_configs={"min.insync.replicas": "2"},
                )
                for t in topics
            ]
        )
    finally:
        await admin.close()


@pytest.fixture
async def world(cluster: str, postgres: str, fresh: str, tmp_path: Path) -> AsyncIterator[World]:
    """A fresh database (schema of both apps) and replicated topic on the cluster."""
    name = f"it_{uuid.uuid4().hex[:12]}"
    url = make_url(await create_database(postgres, name))
    world = World(
        bootstrap=cluster,
        topic=f"{fresh}.seq",
        database_url=url.render_as_string(hide_password=False),
        dsn=url.set(drivername="postgresql").render_as_string(hide_password=False),
        tmp=tmp_path,
    )
    try:
        database = Database(
            world.database_url,
            create_schema=True,
            extra_metadata=[sequencer.metadata, handled.metadata],
        )
        await database.start()
        await database.close()
        await create_replicated_topics(cluster, [world.topic, world.topic + ".dlq"])
        yield world
    finally:
        world.stop_all()
        # the server may have been killed at the end of a failed test: bring it back first
        await services_cmd("start", "postgres")
        await drop_database(postgres, name)


# ---------------------------------------------------------------- the cluster


async def partitions_of(bootstrap: str, topics: list[str]) -> list[dict[str, Any]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    return [p for t in described for p in t["partitions"]]


async def leader_of_most(bootstrap: str, topic: str, besides: int | None = None) -> int:
    """The node leading most of ``topic``'s partitions (other than ``besides``)."""
    counts: dict[int, int] = defaultdict(int)
    for p in await partitions_of(bootstrap, [topic]):
        if p["leader"] != besides:
            counts[p["leader"]] += 1
    return max(counts, key=lambda n: counts[n])


async def fully_replicated(bootstrap: str, topics: list[str]) -> bool:
    """Every partition of ``topics`` has all three replicas in its ISR."""
    with contextlib.suppress(Exception):  # a node just back may not answer yet
        parts = await partitions_of(bootstrap, topics)
        return bool(parts) and all(len(p["isr"]) == 3 for p in parts)
    return False


async def fenced(bootstrap: str, topics: list[str], node: int) -> bool:
    """No partition of ``topics`` has ``node`` as its leader or in its ISR."""
    with contextlib.suppress(Exception):  # the metadata request may hit the dead node
        parts = await partitions_of(bootstrap, topics)
        return bool(parts) and all(p["leader"] != node and node not in p["isr"] for p in parts)
    return False


async def refuses_connections(dsn: str) -> bool:
    """True once a new session to ``dsn`` cannot be opened (the server is down)."""
    try:
        conn = await asyncpg.connect(dsn, timeout=2)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        return True
    await conn.close()
    return False


@dataclasses.dataclass
class BrokerCrash:
    node: int
    at_command: int
    down_s: float  # from SIGKILL until the restarted node answers again
    rejoined_s: float  # from SIGKILL until every ISR holds all three replicas again


async def crash_broker(world: World, node: int, at_command: int) -> BrokerCrash:
    """SIGKILL ``node``, restart it (only it), wait until it is back in every ISR."""
    topics = [world.topic, world.topic + ".dlq", "__consumer_offsets"]
    killed_at = time.monotonic()
    killed = await services_cmd("kill", "kafka-cluster", str(node))
    assert killed.returncode == 0, killed.stderr
    # down until the cluster fenced it: out of every ISR, its leaderships moved
    await wait_until(
        lambda: fenced(world.bootstrap, topics, node),
        within=60,
        interval=0.5,
        message=f"the cluster never fenced node {node}",
    )
    started = await services_cmd("start", "kafka-cluster")
    assert started.returncode == 0, f"node {node} did not come back: {started.stderr}"
    down = time.monotonic() - killed_at
    await wait_until(
        lambda: fully_replicated(world.bootstrap, topics),
        within=120,
        interval=0.5,
        message=f"node {node} never rejoined every ISR",
    )
    return BrokerCrash(node, at_command, down, time.monotonic() - killed_at)


# ---------------------------------------------------------------- commands


@dataclasses.dataclass
class Failed:
    aggregate: str
    seq: int
    code: grpc.StatusCode
    at: float  # time.monotonic()
    committed: bool | None = None  # what the database said afterwards


class ResolvingDriver:
    """Sends each aggregate's commands in order, at most ``rate`` per second.

    A command that fails UNAVAILABLE has an unknown outcome: once the
    database answers again, the driver looks for its state row and goes on
    (it committed) or sends it again (it did not). Any other failure fails
    the test. :meth:`hold` makes the stream wait at a point until a fault is
    over, so each fault lands mid-stream however fast the machine is.
    """

    def __init__(self, world: World, port: int, *, concurrency: int, rate: float) -> None:
        self.world = world
        self.port = port
        self.concurrency = concurrency
        self.rate = rate
        self.done = 0
        self.failed: list[Failed] = []
        self._next = 0.0  # when the next command may start
        self._marks: list[tuple[int, asyncio.Event]] = []
        self._holds: list[tuple[int, asyncio.Event]] = []

    def reached(self, count: int) -> asyncio.Event:
        """Set once ``count`` commands were answered."""
        event = asyncio.Event()
        self._marks.append((count, event))
        return event

    def hold(self, count: int) -> asyncio.Event:
        """No command starts after ``count`` were answered until the event returned is set."""
        event = asyncio.Event()
        self._holds.append((count, event))
        return event

    async def _committed(self, aggregate: str, seq: int) -> bool:
        async def ask() -> list[bool]:
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                found = await self.world.scalar(
                    "SELECT count(*) FROM sequencer_state WHERE aggregate_id = $1 AND seq = $2",
                    aggregate,
                    seq,
                )
                return [found == 1]
            return []

        (answer,) = await wait_until(ask, within=120, interval=0.5, message="the database")
        return answer

    async def run(self, plan: dict[str, int]) -> float:
        started = time.monotonic()
        limit = asyncio.Semaphore(self.concurrency)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            stub = orders_pb2_grpc.OrderServiceStub(channel)

            async def send(name: str, seq: int) -> bool:
                for count, event in self._holds:
                    if self.done >= count:
                        await asyncio.wait_for(event.wait(), 300)
                now = time.monotonic()
                self._next = max(self._next, now) + 1 / self.rate
                if self._next - 1 / self.rate > now:
                    await asyncio.sleep(self._next - 1 / self.rate - now)
                try:
                    async with limit:
                        reply = await stub.PlaceOrder(step(name, seq), timeout=60)
                except grpc.aio.AioRpcError as exc:
                    failure = Failed(name, seq, exc.code(), time.monotonic())
                    self.failed.append(failure)
                    if failure.code != grpc.StatusCode.UNAVAILABLE:
                        raise AssertionError(f"{name}#{seq} failed: {exc}") from exc
                    failure.committed = await self._committed(name, seq)
                    return failure.committed
                assert reply.order_id == f"{name}:{seq}", reply
                return True

            async def aggregate(name: str, count: int) -> None:
                for seq in range(1, count + 1):
                    for _ in range(20):  # bounded: a command is tried at most 20 times
                        if await send(name, seq):
                            break
                    else:
                        raise AssertionError(f"{name}#{seq} never committed")
                    self.done += 1
                    for mark, event in self._marks:
                        if self.done >= mark:
                            event.set()

            async with asyncio.TaskGroup() as group:
                for name, count in plan.items():
                    group.create_task(aggregate(name, count))
        return time.monotonic() - started


# ---------------------------------------------------------------- consumers


async def consumer(world: World, name: str, group: str) -> tuple[Child, int]:
    """``wirebus consume`` of the handled app in ``group``, once it runs; its metrics port."""
    port = free_port()
    child = world.spawn(
        f"consumer-{name}",
        ["consume", CONSUMER_APP, "--group", group, "--no-relay", "--metrics-port", str(port)],
        HANDLED_CONSUMER=name,
    )
    deadline = time.monotonic() + 60
    while "wirebus consume: handled" not in child.output():
        assert child.alive, f"{child.name} exited\n{child.tail()}"
        assert time.monotonic() < deadline, f"{child.name} never came up\n{child.tail()}"
        await asyncio.sleep(0.05)
    return child, port


def outcomes(metrics_port: int) -> dict[str, float]:
    """``wirebus_consumer_records_total`` by outcome, from a consumer's /metrics."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    found: dict[str, float] = defaultdict(float)
    for line in text.splitlines():
        if line.startswith("wirebus_consumer_records_total{"):
            labels, value = line.rsplit(" ", 1)
            outcome = labels.split('outcome="', 1)[1].split('"', 1)[0]
            found[outcome] += float(value)
    return found


async def dead_lettered(bootstrap: str, topic: str) -> int:
    """Records in the DLQ topic (end offsets, summed)."""
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await probe.start()
    try:
        ends = await probe.end_offsets([TopicPartition(topic, p) for p in range(PARTITIONS)])
    finally:
        await probe.stop()
    return sum(ends.values())


async def handled_rows(world: World) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(world.dsn)
    try:
        return await conn.fetch(
            "SELECT aggregate_id, seq, consumer FROM handled_events ORDER BY id"
        )
    finally:
        await conn.close()


def order_violations(rows: list[asyncpg.Record], plan: dict[str, int]) -> dict[str, list[int]]:
    """Aggregates whose events were not handled exactly as 1..n, in handling order."""
    by_key: dict[str, list[int]] = defaultdict(list)
    for r in rows:
        by_key[r["aggregate_id"]].append(int(r["seq"]))
    return {
        key: seqs[:20]
        for key, n in plan.items()
        if (seqs := by_key.get(key, [])) != list(range(1, n + 1))
    }


# ---------------------------------------------------------------- the test


async def test_two_broker_crashes_and_a_database_crash_lose_nothing_and_keep_order(
    world: World,
) -> None:
    plan = plan_of(80, COMMANDS, "agg")
    group = f"{world.topic}.handlers"
    port = await world.gateway()
    relay = await world.relay()
    consumers = [await consumer(world, name, group) for name in ("a", "b")]
    driver = ResolvingDriver(world, port, concurrency=64, rate=RATE)
    crashes: list[BrokerCrash] = []
    outage: dict[str, float] = {}

    # the stream waits (if it must) at 40%, 70% and 90% for the fault before to be over
    first_over, second_over, database_over = (driver.hold(COMMANDS * n // 10) for n in (4, 7, 9))

    async def faults() -> None:
        await driver.reached(COMMANDS // 10).wait()
        first = await leader_of_most(world.bootstrap, world.topic)
        crashes.append(await crash_broker(world, first, driver.done))
        first_over.set()
        await driver.reached(COMMANDS * 4 // 10).wait()
        second = await leader_of_most(world.bootstrap, world.topic, besides=first)
        crashes.append(await crash_broker(world, second, driver.done))
        second_over.set()
        await driver.reached(COMMANDS * 7 // 10).wait()
        outage["at_command"] = driver.done
        outage["killed_at"] = time.monotonic()
        killed = await services_cmd("kill", "postgres")
        assert killed.returncode == 0, killed.stderr
        await wait_until(
            lambda: refuses_connections(world.dsn),
            within=30,
            interval=0.2,
            message="PostgreSQL still answered after its SIGKILL",
        )
        started = await services_cmd("start", "postgres")
        assert started.returncode == 0, f"PostgreSQL did not come back: {started.stderr}"
        outage["back_at"] = time.monotonic()
        outage["finished_at_command"] = driver.done
        database_over.set()

    async with Reader(world.bootstrap, world.topic) as reader:
        async with asyncio.TaskGroup() as tasks:
            fault_task = tasks.create_task(faults())
            sent = await driver.run(plan)
        fault_task.result()
        assert outage["finished_at_command"] < COMMANDS, (
            f"the faults outlasted the stream (commands came too fast): {crashes}, {outage}"
        )
        started = time.monotonic()
        await reader.wait_for_all(expected_pairs(plan), within=120)
        drained = time.monotonic() - started
        verdict = check_stream(reader.records, plan, max_duplicates=FAULTS * BATCH_SIZE)
        assert not reader.rewritten, f"acknowledged records lost: {reader.rewritten[:5]}"

    # the group handled each event exactly once (the inbox removed every duplicate), in order
    await wait_until(
        lambda: _count_handled(world, COMMANDS),
        within=120,
        interval=0.5,
        message="the consumer group to handle every event",
    )
    rows = await handled_rows(world)
    pairs = [(r["aggregate_id"], int(r["seq"])) for r in rows]
    assert len(pairs) == len(set(pairs)), (
        f"{len(pairs) - len(set(pairs))} event(s) handled twice: the inbox let duplicates in"
    )
    assert set(pairs) == expected_pairs(plan), "handled events differ from the commands"
    wrong = order_violations(rows, plan)
    assert not wrong, f"per-key handling order broken in {len(wrong)} aggregate(s): {wrong}"
    by_consumer = {c: sum(1 for r in rows if r["consumer"] == c) for c in ("a", "b")}
    assert all(by_consumer.values()), f"one consumer handled nothing: {by_consumer}"
    assert (
        await world.scalar("SELECT count(*) FROM wirebus_inbox WHERE consumer_group = $1", group)
        == COMMANDS
    )
    assert await dead_lettered(world.bootstrap, world.topic + ".dlq") == 0, "events dead-lettered"

    # the commands: only UNAVAILABLE, only around the database crash, every outcome resolved
    failed = driver.failed
    assert failed, "no command was in flight when PostgreSQL was killed"
    early = [f for f in failed if f.at < outage["killed_at"]]
    assert not early, f"commands failed before the database crash (broker crashes?): {early[:5]}"
    assert await world.scalar("SELECT count(*) FROM sequencer_state") == COMMANDS
    assert await outbox_counts(world) == {}, "rows left in the outbox after everything arrived"
    children = [world.children[0], relay, *(c for c, _ in consumers)]
    assert all(c.alive for c in children), "a process died\n" + world.logs()
    assert "relay pass failed" in relay.output(), "the relay never noticed the database crash"

    seen = [outcomes(p) for _, p in consumers]
    removed = sum(s.get("duplicate", 0) for s in seen)
    print(
        f"\n{COMMANDS:,} commands in {sent:.1f}s ({COMMANDS / sent:.0f}/s);"
        + "".join(
            f" broker {c.node} killed at command {c.at_command}, answering {c.down_s:.1f}s"
            f" later, in every ISR {c.rejoined_s:.1f}s later;"
            for c in crashes
        )
        + f" PostgreSQL killed at command {outage['at_command']:.0f}, back"
        f" {outage['back_at'] - outage['killed_at']:.1f}s later;"
        f" {len(failed)} command(s) failed UNAVAILABLE"
        f" ({sum(1 for f in failed if f.committed)} had committed);"
        f" all read {drained:.1f}s after the last command; {verdict.records} records,"
        f" {verdict.duplicates} duplicate(s) on the topic; inbox removed {removed:.0f}"
        f" duplicate deliveries; handled by a/b {by_consumer}; per-key order violations 0"
    )


async def _count_handled(world: World, expected: int) -> bool:
    with contextlib.suppress(OSError, asyncpg.PostgresError):
        return bool(await world.scalar("SELECT count(*) FROM handled_events") >= expected)
    return False
