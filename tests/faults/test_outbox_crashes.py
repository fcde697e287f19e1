"""Crash and fault tests of the transactional outbox, on the real Kafka and PostgreSQL.

Every test gets a fresh PostgreSQL database (``it_<hex>``, dropped at the end)
and a fresh topic, runs the gateway (``wirebus serve --no-relay``) and the
relay(s) (``wirebus relay``) of ``tests/faults/apps/sequencer.py`` as
subprocesses, drives commands over gRPC and reads the topic back with aiokafka.

A command is (aggregate, sequence): each aggregate's commands are sent one at
a time, in sequence order, so each aggregate's events must appear in its
partition in sequence order (first occurrences; a duplicate re-publishes an
earlier record with the same ``ce_id``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import inspect
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import grpc.aio
import pytest
from aiokafka import AIOKafkaConsumer
from shop.orders.v1 import orders_pb2, orders_pb2_grpc
from sqlalchemy import insert, select
from sqlalchemy.engine import make_url

from tests.checkout import PYTHONPATH, ROOT
from tests.faults.apps import sequencer
from tests.integration.conftest import run_services
from wirebus.broker import EventEncoder
from wirebus.codec import EventRegistry
from wirebus.db import Database, outbox_table
from wirebus.kafka import ensure_topics
from wirebus.outbox.relay import Relay
from wirebus.outbox.uow import UnitOfWork
from wirebus.testing import wait_until
from wirebus.testing.databases import create_database, drop_database

pytestmark = pytest.mark.integration

APP = "tests.faults.apps.sequencer:app"
# the batch_size of the relay `wirebus relay` runs (Relay's default): what one crash re-publishes
BATCH_SIZE: int = inspect.signature(Relay).parameters["batch_size"].default
PARTITIONS = 3
LATE_COMMITS_PER_CRASH = 64  # the drivers' concurrency: commands in flight at a crash


# ---------------------------------------------------------------- processes


@dataclasses.dataclass
class Child:
    """One ``wirebus`` subprocess and the file its stderr goes to."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, lines: int = 40) -> str:
        return f"--- {self.name} ({self.log}) ---\n" + "\n".join(
            self.output().splitlines()[-lines:]
        )

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, the batch in hand is abandoned."""
        if self.alive:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(30)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (graceful), SIGKILL if it does not exit in time."""
        if self.alive:
            self.popen.send_signal(signal.SIGCONT)  # in case a test froze it
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(30)
        return self.popen.returncode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass
class World:
    """A fresh database and topic, and the subprocesses running on them."""

    bootstrap: str
    topic: str
    database_url: str  # SQLAlchemy async URL of the fresh database
    dsn: str  # the same, for asyncpg
    tmp: Path
    children: list[Child] = dataclasses.field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": PYTHONPATH,
            "WIREBUS_KAFKA_BOOTSTRAP": self.bootstrap,
            "WIREBUS_DATABASE_URL": self.database_url,
            "SEQUENCER_TOPIC": self.topic,
            **extra,
        }

    def spawn(self, name: str, args: list[str], **extra_env: str) -> Child:
        log = self.tmp / f"{name}-{len(self.children)}.log"
        with log.open("wb") as err:  # the child keeps its own descriptor
            popen = subprocess.Popen(
                [sys.executable, "-m", "wirebus", *args],
                cwd=ROOT,
                env=self.env(**extra_env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        child = Child(name, popen, log)
        self.children.append(child)
        return child

    async def gateway(self, **extra_env: str) -> int:
        """``wirebus serve APP --no-relay`` on a free port, once it accepts calls."""
        port = free_port()
        child = self.spawn(
            "gateway", ["serve", APP, "--no-relay", "--port", str(port)], **extra_env
        )
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            deadline = time.monotonic() + 60
            while True:
                assert child.alive, f"the gateway exited\n{child.tail()}"
                assert time.monotonic() < deadline, f"the gateway never came up\n{child.tail()}"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(channel.channel_ready(), 1)
                    return port

    async def relay(self, name: str = "relay") -> Child:
        """``wirebus relay APP``, once it says it runs (leases taken, LISTENing)."""
        child = self.spawn(name, ["relay", APP])
        deadline = time.monotonic() + 60
        while "wirebus relay: sequencer" not in child.output():
            assert child.alive, f"{name} exited\n{child.tail()}"
            assert time.monotonic() < deadline, f"{name} never came up\n{child.tail()}"
            await asyncio.sleep(0.05)
        return child

    def stop_all(self) -> None:
        for child in reversed(self.children):
            child.stop()

    async def scalar(self, sql: str, *args: Any) -> Any:
        conn = await asyncpg.connect(self.dsn)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    def logs(self) -> str:
        return "\n".join(c.tail() for c in self.children)


@pytest.fixture
async def world(services: dict[str, str], fresh: str, tmp_path: Path) -> AsyncIterator[World]:
    """A fresh database ``it_<hex>`` (schema created) and topic; everything stopped after."""
    admin_url = services["WIREBUS_DATABASE_URL"]
    name = f"it_{uuid.uuid4().hex[:12]}"
    url = make_url(await create_database(admin_url, name))
    world = World(
        bootstrap=services["WIREBUS_KAFKA_BOOTSTRAP"],
        topic=f"{fresh}.seq",
        database_url=url.render_as_string(hide_password=False),
        dsn=url.set(drivername="postgresql").render_as_string(hide_password=False),
        tmp=tmp_path,
    )
    try:
        # the schema exists before any subprocess starts: no two processes race to create it
        database = Database(
            world.database_url, create_schema=True, extra_metadata=[sequencer.metadata]
        )
        await database.start()
        await database.close()
        await ensure_topics(world.bootstrap, [world.topic], partitions=PARTITIONS)
        yield world
    finally:
        world.stop_all()
        await drop_database(admin_url, name)


# ---------------------------------------------------------------- commands


def step(aggregate: str, seq: int) -> orders_pb2.PlaceOrderRequest:
    return orders_pb2.PlaceOrderRequest(
        customer_id=aggregate, items=[orders_pb2.LineItem(sku="seq", quantity=seq)]
    )


class Driver:
    """Sends each aggregate's commands in sequence order, many aggregates at once.

    An aggregate's next command is sent only after the previous one was
    answered (so committed): its outbox rows are in sequence order.
    """

    def __init__(self, port: int, *, concurrency: int = 64, rate: float | None = None) -> None:
        self.port = port
        self.concurrency = concurrency
        self.rate = rate  # commands started per second, at most (None: as fast as possible)
        self.done = 0
        self._issued = 0
        self._marks: list[tuple[int, asyncio.Event]] = []

    def reached(self, count: int) -> asyncio.Event:
        """Set once ``count`` commands were answered."""
        event = asyncio.Event()
        self._marks.append((count, event))
        return event

    async def run(self, plan: dict[str, int]) -> float:
        """Send ``plan`` (aggregate -> commands 1..n); the seconds it took."""
        started = time.monotonic()
        limit = asyncio.Semaphore(self.concurrency)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            stub = orders_pb2_grpc.OrderServiceStub(channel)

            async def aggregate(name: str, count: int) -> None:
                for seq in range(1, count + 1):
                    if self.rate is not None:
                        slot, self._issued = self._issued, self._issued + 1
                        delay = started + slot / self.rate - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    async with limit:
                        reply = await stub.PlaceOrder(step(name, seq), timeout=60)
                    assert reply.order_id == f"{name}:{seq}", reply
                    self.done += 1
                    for mark, event in self._marks:
                        if self.done >= mark:
                            event.set()

            async with asyncio.TaskGroup() as group:
                for name, count in plan.items():
                    group.create_task(aggregate(name, count))
        return time.monotonic() - started


async def place(port: int, aggregate: str, seq: int) -> orders_pb2.PlaceOrderResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        return await stub.PlaceOrder(step(aggregate, seq), timeout=30)


# ---------------------------------------------------------------- the topic


@dataclasses.dataclass(frozen=True, slots=True)
class Seen:
    partition: int
    offset: int
    key: str
    aggregate: str  # from the value
    seq: int
    ce_id: str


class Reader:
    """Reads the topic from the start (fresh group) in the background, while the test runs.

    Records are kept by (partition, offset), so a consumer that re-reads after a
    rebalance does not invent duplicates: what is counted is what the topic holds.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=f"faults-{uuid.uuid4().hex[:10]}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=50,
        )
        self._by_position: dict[tuple[int, int], Seen] = {}
        self.rewritten: list[tuple[Seen, Seen]] = []
        """Positions read twice with different records: the broker lost acknowledged
        records (its log was truncated) and reused their offsets."""
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Reader:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                for m in messages:
                    value = orders_pb2.OrderPlaced.FromString(m.value)
                    seen = Seen(
                        partition=m.partition,
                        offset=m.offset,
                        key=m.key.decode(),
                        aggregate=value.order_id,
                        seq=value.total_cents,
                        ce_id=dict(m.headers)["ce_id"].decode(),
                    )
                    before = self._by_position.get((m.partition, m.offset))
                    if before is not None and before.ce_id != seen.ce_id:
                        self.rewritten.append((before, seen))
                    self._by_position[(m.partition, m.offset)] = seen

    @property
    def records(self) -> list[Seen]:
        """Every record read so far, in (partition, offset) order."""
        if self._task is not None and self._task.done() and not self._task.cancelled():
            self._task.result()  # the reader failed: say why
        return [self._by_position[p] for p in sorted(self._by_position)]

    def ce_ids(self) -> set[str]:
        return {r.ce_id for r in self._by_position.values()}

    def pairs(self) -> set[tuple[str, int]]:
        return {(r.aggregate, r.seq) for r in self.records}

    async def wait_for(
        self, predicate: Callable[[list[Seen]], bool], within: float, what: str
    ) -> None:
        deadline = time.monotonic() + within
        while not predicate(self.records):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {within:.0f}s waiting for {what}"
                    f" ({len(self.records)} record(s) read)"
                )
            await asyncio.sleep(0.1)

    async def wait_for_all(self, expected: set[tuple[str, int]], within: float) -> None:
        """Until every expected pair was read, then a little longer (late duplicates)."""
        await self.wait_for(
            lambda _: expected <= self.pairs(),
            within,
            f"all {len(expected)} events (missing e.g. {sorted(expected - self.pairs())[:5]})",
        )
        await asyncio.sleep(2)


def expected_pairs(plan: dict[str, int]) -> set[tuple[str, int]]:
    return {(a, s) for a, n in plan.items() for s in range(1, n + 1)}


@dataclasses.dataclass
class Verdict:
    records: int
    unique: int
    duplicates: int
    duplicated: set[str]  # ce_ids read more than once
    max_copies: int
    duplicate_runs: int  # blocks of re-published records, summed over partitions
    interleaved: int  # first-time records inside those blocks (late commits)


def check_stream(records: list[Seen], plan: dict[str, int], *, max_duplicates: int) -> Verdict:
    """Nothing lost, nothing invented, duplicates bounded, per-aggregate order kept."""
    expected = expected_pairs(plan)
    seen = {(r.aggregate, r.seq) for r in records}
    missing = sorted(expected - seen)
    assert not missing, f"{len(missing)} event(s) never reached Kafka, e.g. {missing[:10]}"
    unexpected = sorted(seen - expected)
    assert not unexpected, f"events nobody sent: {unexpected[:10]}"
    assert all(r.key == r.aggregate for r in records), "a record's key is not its aggregate id"

    # a duplicate is the same outbox row published again: same ce_id, same event
    pair_of: dict[str, tuple[str, int]] = {}
    ids_of: dict[tuple[str, int], set[str]] = defaultdict(set)
    copies: dict[str, int] = defaultdict(int)
    for r in records:
        other = pair_of.setdefault(r.ce_id, (r.aggregate, r.seq))
        assert other == (r.aggregate, r.seq), f"ce_id {r.ce_id} names {other} and {r}"
        ids_of[(r.aggregate, r.seq)].add(r.ce_id)
        copies[r.ce_id] += 1
    twice = {p: ids for p, ids in ids_of.items() if len(ids) > 1}
    assert not twice, f"one command became several events (different ce_ids): {list(twice)[:5]}"
    unique = len(copies)
    assert unique == len(expected), (
        f"dropping duplicates by ce_id (as the inbox does) leaves {unique}, not {len(expected)}"
    )
    duplicates = len(records) - unique
    assert duplicates <= max_duplicates, (
        f"{duplicates} duplicate record(s); at most {max_duplicates} are explained by"
        " re-published in-flight batches"
    )

    # order: an aggregate lives in one partition; first occurrences in offset order are 1..n
    by_key: dict[str, list[Seen]] = defaultdict(list)
    for r in records:  # already in (partition, offset) order
        by_key[r.key].append(r)
    for key, mine in by_key.items():
        partitions = {r.partition for r in mine}
        assert len(partitions) == 1, f"aggregate {key} is spread over partitions {partitions}"
        first: list[int] = []
        done: set[str] = set()
        for r in mine:
            if r.ce_id not in done:
                done.add(r.ce_id)
                first.append(r.seq)
        wrong = next((i for i in range(1, len(first)) if first[i] <= first[i - 1]), None)
        assert wrong is None, (
            f"aggregate {key} out of order in the topic: first occurrences"
            f" ...{first[max(0, wrong - 3) : wrong + 3]}... (sequence numbers in offset order)"
        )
        assert first == list(range(1, plan[key] + 1)), f"aggregate {key}: {first[:20]}..."

    # where the duplicates are: blocks of records whose ce_id appeared before, per partition.
    # A block may be split by a few first-time records: rows whose commit was in flight
    # when the batch was claimed (their ids fall among the abandoned rows' ids) are
    # claimed by the next relay in id order, between the re-published ones.
    runs = 0
    interleaved = 0
    published: set[str] = set()
    previous: dict[int, int] = {}
    for r in records:
        if r.ce_id in published:
            last = previous.get(r.partition)
            if last is None or r.offset - last - 1 > LATE_COMMITS_PER_CRASH:
                runs += 1
            elif r.offset != last + 1:
                interleaved += r.offset - last - 1
            previous[r.partition] = r.offset
        published.add(r.ce_id)
    return Verdict(
        records=len(records),
        unique=unique,
        duplicates=duplicates,
        duplicated={ce_id for ce_id, n in copies.items() if n > 1},
        max_copies=max(copies.values()),
        duplicate_runs=runs,
        interleaved=interleaved,
    )


async def outbox_counts(world: World) -> dict[str, int]:
    conn = await asyncpg.connect(world.dsn)
    try:
        rows = await conn.fetch("SELECT status, count(*) AS n FROM wirebus_outbox GROUP BY status")
    finally:
        await conn.close()
    return {r["status"]: r["n"] for r in rows}


def plan_of(aggregates: int, commands: int, prefix: str) -> dict[str, int]:
    """``commands`` spread evenly over ``aggregates`` aggregates."""
    per, extra = divmod(commands, aggregates)
    return {f"{prefix}-{a:03d}": per + (1 if a < extra else 0) for a in range(aggregates)}


async def services_cmd(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_services, *args)


# ---------------------------------------------------------------- the tests


@dataclasses.dataclass
class Crash:
    at_command: int
    in_flight: set[str]  # ce_ids of the rows still pending when the relay was killed
    already_published: set[str]  # those of them Kafka already had: they must come again
    probes: int


CLAIM_PID = (  # the backend of a relay's claim transaction (rows claimed, not yet marked)
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
    " AND state = 'idle in transaction'"
    " AND (query LIKE '%FOR UPDATE SKIP LOCKED%' OR query LIKE 'DELETE FROM wirebus_outbox%')"
    " LIMIT 1"
)


@dataclasses.dataclass
class Frozen:
    claim_pid: int  # the backend of its claim transaction
    in_flight: set[str]  # ce_ids of the rows pending while it is frozen (its batch first)
    keys: set[str]  # their aggregates
    published: set[str]  # those of them Kafka already has
    probes: int


async def freeze_mid_batch(
    conn: asyncpg.Connection, relay: Child, reader: Reader, *, sent: bool
) -> Frozen:
    """Leave the relay frozen (SIGSTOP) holding a claim; Kafka has some of it iff ``sent``.

    The relay is frozen for 3 s so a backlog builds and its next batch is a
    full one; then it is run in steps of a few milliseconds (SIGCONT, SIGSTOP).
    After each step, if it holds a claim transaction, the test looks whether
    still-pending rows are already in the topic (published, not yet marked).
    """
    pid = relay.popen.pid
    os.kill(pid, signal.SIGSTOP)
    await asyncio.sleep(3)
    deadline = time.monotonic() + 60
    probes = 0
    while time.monotonic() < deadline:
        assert relay.alive, f"the relay died by itself\n{relay.tail()}"
        os.kill(pid, signal.SIGCONT)
        await asyncio.sleep(0.003)
        os.kill(pid, signal.SIGSTOP)
        probes += 1
        claim = await conn.fetchval(CLAIM_PID)
        if claim is None:
            continue  # between batches: nothing in hand
        rows = await conn.fetch(
            "SELECT event_id, key FROM wirebus_outbox WHERE status = 'pending'"
            " ORDER BY id LIMIT $1",
            BATCH_SIZE,
        )
        pending = {r["event_id"] for r in rows}
        for _ in range(4):  # what the broker acknowledged shows up in the reader
            published = pending & reader.ce_ids()
            if published:
                break
            await asyncio.sleep(0.05)
        if bool(published) == sent:
            keys = {bytes(r["key"]).decode() for r in rows}
            return Frozen(claim, pending, keys, published, probes)
    raise AssertionError(f"never caught the relay mid-batch ({probes} probes)")


async def crash_mid_batch(world: World, relay: Child, reader: Reader, at: int) -> Crash:
    """SIGKILL the relay after Kafka acknowledged part of its batch and before it marked it."""
    conn = await asyncpg.connect(world.dsn)
    try:
        frozen = await freeze_mid_batch(conn, relay, reader, sent=True)
        relay.kill()
        # The frozen relay's COMMIT may already have been on its way when it was
        # stopped; rows it did commit are published and must not come again.
        # Only rows still in the outbox after the kill are owed a republish.
        await asyncio.sleep(0.5)  # the killed backend's transaction ends
        rows = await conn.fetch(
            "SELECT event_id FROM wirebus_outbox WHERE event_id = ANY($1::text[])",
            list(frozen.published),
        )
        still_pending = {r["event_id"] for r in rows}
        return Crash(at, frozen.in_flight, frozen.published & still_pending, frozen.probes)
    finally:
        if relay.alive:
            os.kill(relay.popen.pid, signal.SIGCONT)
        await conn.close()


async def test_relay_killed_twice_during_10000_commands_loses_nothing_and_keeps_order(
    world: World,
) -> None:
    plan = plan_of(80, 10_000, "agg")
    port = await world.gateway()
    relay = await world.relay("relay")
    driver = Driver(port, concurrency=64)
    crashes: list[Crash] = []

    async with Reader(world.bootstrap, world.topic) as reader:

        async def killer() -> None:
            nonlocal relay
            for fraction in (0.3, 0.6):
                await driver.reached(int(10_000 * fraction)).wait()
                crashes.append(await crash_mid_batch(world, relay, reader, driver.done))
                relay = await world.relay("relay")  # a new one takes over the abandoned batch

        async with asyncio.TaskGroup() as group:
            kill_task = group.create_task(killer())
            sent = await driver.run(plan)
        kill_task.result()
        assert len(crashes) == 2, f"the relay was killed {len(crashes)} time(s), not twice"
        started = time.monotonic()
        await reader.wait_for_all(expected_pairs(plan), within=120)
        drained = time.monotonic() - started
        verdict = check_stream(reader.records, plan, max_duplicates=2 * BATCH_SIZE)

    # the duplicates are exactly the re-published rows of the batches the crashes abandoned
    in_flight = set().union(*(c.in_flight for c in crashes))
    stray = verdict.duplicated - in_flight
    assert not stray, f"{len(stray)} duplicate(s) were not in a killed relay's batch"
    for crash in crashes:
        again = crash.already_published - verdict.duplicated
        assert not again, (
            f"{len(again)} row(s) published before the crash at command {crash.at_command}"
            " were not published again by the next relay (not at-least-once)"
        )
    assert verdict.max_copies <= 1 + len(crashes), (
        f"an event was published {verdict.max_copies} times with only {len(crashes)} crashes"
    )
    assert verdict.duplicate_runs <= len(crashes) * PARTITIONS, (
        f"duplicates are scattered over {verdict.duplicate_runs} runs: expected at most one"
        f" run per partition per crash ({len(crashes)} crashes)"
    )
    assert verdict.interleaved <= len(crashes) * LATE_COMMITS_PER_CRASH, (
        f"{verdict.interleaved} first-time records inside the re-published blocks: more than"
        f" the {LATE_COMMITS_PER_CRASH} commands in flight per crash could have committed late"
    )
    assert relay.alive, f"the restarted relay died\n{relay.tail()}"
    assert await world.scalar("SELECT count(*) FROM sequencer_state") == 10_000
    assert await outbox_counts(world) == {}, "rows left in the outbox after everything arrived"
    report = [(c.at_command, len(c.in_flight), len(c.already_published), c.probes) for c in crashes]
    print(
        f"\n10,000 commands in {sent:.1f}s ({10_000 / sent:.0f}/s); crashes {report}"
        f" (command, pending, published-unmarked, probes); drained {drained:.1f}s later;"
        f" {verdict.records} records, {verdict.duplicates} duplicates in"
        f" {verdict.duplicate_runs} run(s), {verdict.interleaved} late commit(s) among them"
    )


async def test_kafka_down_for_10s_loses_nothing_and_keeps_order(world: World) -> None:
    plan = plan_of(40, 2_000, "agg")
    port = await world.gateway()
    relay = await world.relay("relay")
    driver = Driver(port, concurrency=64, rate=90)  # ~22s of commands: some during the outage
    outage: dict[str, Any] = {}

    async def outage_of_10s() -> None:
        await driver.reached(400).wait()
        stopped = await services_cmd("stop", "kafka")
        assert stopped.returncode == 0, stopped.stderr
        outage["stop_stderr"] = stopped.stderr.strip()
        outage["down_at"] = driver.done
        await asyncio.sleep(10)
        outage["pending_while_down"] = (await outbox_counts(world)).get("pending", 0)
        outage["up_at"] = driver.done
        started = await services_cmd("start", "kafka")
        assert started.returncode == 0, started.stderr

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(outage_of_10s())
            sent = await driver.run(plan)
    finally:
        restarted = await services_cmd("start", "kafka")  # always: idempotent when running
        assert restarted.returncode == 0, f"Kafka did not come back: {restarted.stderr}"
    assert outage["up_at"] - outage["down_at"] > 100, (
        f"the gateway should keep taking commands while Kafka is down: {outage}"
    )
    assert outage["pending_while_down"] > 0, f"the outage held nothing back: {outage}"
    deadline = time.monotonic() + 120
    while (counts := await outbox_counts(world)) and time.monotonic() < deadline:
        assert "failed" not in counts, (
            f"rows marked failed after the broker came back (lost until `wirebus outbox retry`):"
            f" {counts}\n{relay.tail(5)}"
        )
        await asyncio.sleep(0.5)
    async with Reader(world.bootstrap, world.topic) as reader:
        started = time.monotonic()
        await reader.wait_for_all(expected_pairs(plan), within=150)
        drained = time.monotonic() - started
        try:
            verdict = check_stream(reader.records, plan, max_duplicates=BATCH_SIZE)
        except AssertionError as failed:  # what the relay saw of the outage, to explain it
            warnings = [
                line
                for line in relay.output().splitlines()
                if "wirebus" in line and ("WARNING" in line or "ERROR" in line)
            ]
            raise AssertionError(
                f"{failed}\nrelay warnings:\n"
                + "\n".join(warnings)
                + f"\nstopping Kafka said: {outage.get('stop_stderr')!r}"
                + f"\noffsets the broker reused for other records: {reader.rewritten[:5]}"
            ) from None
    assert relay.alive, f"the relay died during the outage\n{relay.tail()}"
    assert await outbox_counts(world) == {}, "rows left (or failed) in the outbox"
    print(
        f"\n2,000 commands in {sent:.1f}s; Kafka down from command {outage['down_at']} to"
        f" {outage['up_at']}, {outage['pending_while_down']} rows pending then; all read"
        f" {drained:.1f}s after; {verdict.duplicates} duplicates"
    )


async def test_two_relays_publish_everything_once_in_order(world: World) -> None:
    plan = plan_of(60, 3_000, "agg")
    port = await world.gateway()
    await world.relay("relay-a")
    driver = Driver(port, concurrency=64)
    leases: dict[int, int] = {}

    async def second_relay_and_leases() -> None:
        await driver.reached(300).wait()
        await world.relay("relay-b")  # joins while rows flow: shards are handed over
        await driver.reached(2_000).wait()
        conn = await asyncpg.connect(world.dsn)

        async def settled() -> bool:
            # A shard handed over is released by one relay before the other's next
            # rebalance takes it: look until the hand-over is done (bounded).
            rows = await conn.fetch(
                "SELECT pid, count(*) AS n FROM pg_locks"
                " WHERE locktype = 'advisory' AND classid = $1 AND granted GROUP BY pid",
                0x77697265,
            )
            leases.clear()
            leases.update({r["pid"]: r["n"] for r in rows})
            return len(leases) == 2 and sum(leases.values()) == 64

        try:
            with contextlib.suppress(TimeoutError):
                await wait_until(settled, within=10, interval=0.1)
        finally:
            await conn.close()

    async with Reader(world.bootstrap, world.topic) as reader:
        async with asyncio.TaskGroup() as group:
            group.create_task(second_relay_and_leases())
            sent = await driver.run(plan)
        await reader.wait_for_all(expected_pairs(plan), within=90)
        verdict = check_stream(reader.records, plan, max_duplicates=0)
    assert len(leases) == 2, f"both relays should hold shard leases (pid -> shards): {leases}"
    assert sum(leases.values()) == 64, f"every shard should be leased once: {leases}"
    assert all(c.alive for c in world.children), world.logs()
    assert await outbox_counts(world) == {}
    print(f"\n3,000 commands in {sent:.1f}s; leases {leases}; {verdict.records} records")


async def test_handler_raising_after_emit_publishes_nothing_and_writes_nothing(
    world: World,
) -> None:
    port = await world.gateway(SEQUENCER_FAIL_PREFIX="boom-")
    await world.relay()
    async with Reader(world.bootstrap, world.topic) as reader:
        before = await place(port, "ok-before", 1)
        assert before.order_id == "ok-before:1"
        for n in range(1, 4):
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await place(port, f"boom-{n}", 1)
            assert failed.value.code() == grpc.StatusCode.INTERNAL, failed.value
        marker = await place(port, "marker", 1)
        assert marker.order_id == "marker:1"
        await reader.wait_for(
            lambda records: any(r.aggregate == "marker" for r in records), 60, "the marker"
        )
        await asyncio.sleep(3)  # anything published around the marker has arrived by now
        keys = [r.key for r in reader.records]
    assert sorted(keys) == ["marker", "ok-before"], (
        f"a failed command's event reached Kafka (or a good one did not): {keys}"
    )
    states = await world.scalar(
        "SELECT string_agg(aggregate_id, ',' ORDER BY aggregate_id) FROM sequencer_state"
    )
    assert states == "marker,ok-before", f"state rows of failed commands were kept: {states}"
    boom_rows = await world.scalar(
        "SELECT count(*) FROM wirebus_outbox WHERE key LIKE 'boom-%'::bytea"
    )
    assert boom_rows == 0, "a failed command left an outbox row"
    assert "injected fault after emitting boom-1#1" in world.children[0].output()


async def test_transaction_committing_late_is_published_though_later_ids_went_first(
    world: World,
) -> None:
    plan = plan_of(10, 300, "later")
    port = await world.gateway()
    await world.relay()
    # an open transaction of wirebus's UnitOfWork: state row + outbox row written, not committed
    Placed = sequencer.placed_type(world.topic)
    registry = EventRegistry()
    registry.add(Placed)
    database = Database(world.database_url)
    uow = UnitOfWork(database, EventEncoder(registry, source="sequencer"))
    session = uow.session
    commit, written, release = session.commit, asyncio.Event(), asyncio.Event()
    held: dict[str, int] = {}

    async def commit_when_released() -> None:
        held["id"] = (
            await session.execute(select(outbox_table.c.id).where(outbox_table.c.key == b"held"))
        ).scalar_one()
        written.set()
        await release.wait()
        await commit()

    session.commit = commit_when_released  # type: ignore[method-assign]
    now = dt.datetime.now(dt.UTC)
    late: asyncio.Task[list[Any]] | None = None
    try:
        await session.execute(
            insert(sequencer.state).values(aggregate_id="held", seq=1, written_at=now)
        )
        event = Placed(order_id="held", customer_id="held", total_cents=1, placed_at=now)
        late = asyncio.create_task(uow.commit([event]))
        await asyncio.wait_for(written.wait(), 30)
        async with Reader(world.bootstrap, world.topic) as reader:
            await Driver(port).run(plan)  # later commands: committed, higher outbox ids
            await reader.wait_for_all(expected_pairs(plan), within=60)
            last_id = await world.scalar("SELECT last_value FROM wirebus_outbox_id_seq")
            assert last_id >= held["id"] + 300, (held, last_id)
            assert await outbox_counts(world) == {}, "later rows not all published yet"
            assert "held" not in {r.aggregate for r in reader.records}, "uncommitted row sent"
            release.set()
            await asyncio.wait_for(late, 30)
            await reader.wait_for(
                lambda records: any(r.aggregate == "held" for r in records),
                30,
                f"the late-committed event (outbox id {held['id']} < {last_id} already published)",
            )
            verdict = check_stream(reader.records, {**plan, "held": 1}, max_duplicates=0)
    finally:
        release.set()
        if late is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(late, 30)
        await uow.close()
        await database.close()
    assert await world.scalar("SELECT count(*) FROM sequencer_state WHERE aggregate_id = 'held'")
    print(f"\nheld outbox id {held['id']} published after ids up to {last_id}; {verdict}")


async def wait_in_log(child: Child, text: str, within: float) -> None:
    deadline = time.monotonic() + within
    while text not in child.output():
        assert time.monotonic() < deadline, f"{child.name} never logged {text!r}\n{child.tail()}"
        await asyncio.sleep(0.1)


async def advisory_leases(world: World) -> dict[int, int]:
    """Shard leases held now: backend pid -> number of shards."""
    conn = await asyncpg.connect(world.dsn)
    try:
        rows = await conn.fetch(
            "SELECT pid, count(*) AS n FROM pg_locks"
            " WHERE locktype = 'advisory' AND classid = $1 AND granted GROUP BY pid",
            0x77697265,
        )
    finally:
        await conn.close()
    return {r["pid"]: r["n"] for r in rows}


async def test_relay_recovers_from_a_failed_pass_and_keeps_publishing(world: World) -> None:
    """A pass fails on a query error (its claim, waiting on a lock, is cancelled: think
    statement_timeout or an operator's pg_cancel_backend) while the lease session lives on:
    the relay must recover by itself, and with a second relay joining, every event is still
    published, in order."""
    plan = plan_of(40, 1_500, "agg")
    port = await world.gateway()
    relay = await world.relay("relay-a")
    driver = Driver(port, concurrency=32, rate=150)

    async with Reader(world.bootstrap, world.topic) as reader:

        async def fault() -> None:
            await driver.reached(200).wait()
            conn = await asyncpg.connect(world.dsn)
            locker = await asyncpg.connect(world.dsn)
            try:
                locked = locker.transaction()
                await locked.start()
                # No claim (a DELETE) can run now; the relay's next one waits on this lock.
                await locker.execute("LOCK TABLE wirebus_outbox IN SHARE MODE")
                deadline = time.monotonic() + 30
                while (
                    waiting := await conn.fetchval(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                        " AND application_name = 'wirebus-relay' AND wait_event_type = 'Lock'"
                        " LIMIT 1"
                    )
                ) is None:
                    assert time.monotonic() < deadline, "the relay's claim never waited"
                    await asyncio.sleep(0.01)
                assert await conn.fetchval("SELECT pg_cancel_backend($1)", waiting)
                await wait_in_log(relay, "relay pass failed", 30)
                await locked.rollback()
            finally:
                await locker.close()
                await conn.close()
            await driver.reached(700).wait()
            await world.relay("relay-b")

        async with asyncio.TaskGroup() as group:
            group.create_task(fault())
            await driver.run(plan)
        try:
            await reader.wait_for_all(expected_pairs(plan), within=60)
        finally:
            leases = await advisory_leases(world)
            live = await world.scalar(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = 'wirebus-relay' AND datname = current_database()"
            )
            print(f"\nleases (pid -> shards) {leases}; sessions named wirebus-relay: {live}")
        check_stream(reader.records, plan, max_duplicates=BATCH_SIZE)


async def test_relay_that_loses_its_lease_mid_batch_does_not_break_per_key_order(
    world: World,
) -> None:
    """Relay A's lease session ends while A holds a claimed, unsent batch (its claim
    connection lives on); relay B leases the freed shards. A must not publish that batch
    after B published later events of the same aggregates."""
    plan = plan_of(30, 1_500, "agg")
    port = await world.gateway()
    relay = await world.relay("relay-a")
    driver = Driver(port, concurrency=32, rate=150)

    async with Reader(world.bootstrap, world.topic) as reader:

        async def fault() -> None:
            await driver.reached(200).wait()
            conn = await asyncpg.connect(world.dsn)
            try:
                frozen = await freeze_mid_batch(conn, relay, reader, sent=False)
                before = reader.ce_ids() | frozen.in_flight
                lease = await conn.fetchval(
                    "SELECT pid FROM pg_stat_activity"
                    " WHERE application_name = 'wirebus-relay' AND datname = current_database()"
                )
                assert lease is not None, "relay A has no lease session"
                assert await conn.fetchval("SELECT pg_terminate_backend($1)", lease)
                await world.relay("relay-b")
                await reader.wait_for(
                    lambda records: any(
                        r.ce_id not in before and r.key in frozen.keys for r in records
                    ),
                    30,
                    "relay B to publish later events of the aggregates in A's batch",
                )
            finally:
                os.kill(relay.popen.pid, signal.SIGCONT)  # A goes on with the batch in hand
                await conn.close()

        async with asyncio.TaskGroup() as group:
            group.create_task(fault())
            await driver.run(plan)
        await reader.wait_for_all(expected_pairs(plan), within=60)
        check_stream(reader.records, plan, max_duplicates=BATCH_SIZE)


async def test_database_closing_every_connection_mid_stream_fails_only_commands_in_flight(
    world: World,
) -> None:
    """PostgreSQL ends every session of the app (as on a restart or a failover) while
    commands flow: the commands in flight fail with UNAVAILABLE, the gateway and the
    relay go on with new connections (no restart), and state rows and events still
    match one for one."""
    port = await world.gateway()
    relay = await world.relay()
    answered: dict[str, int] = {}  # aggregate -> last sequence acknowledged
    failed: list[tuple[str, int, grpc.StatusCode]] = []
    killed = asyncio.Event()
    stop = asyncio.Event()
    terminated = 0

    async with (
        Reader(world.bootstrap, world.topic) as reader,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        stub = orders_pb2_grpc.OrderServiceStub(channel)

        async def aggregate(name: str) -> None:
            seq = 1
            while not stop.is_set():
                try:
                    await stub.PlaceOrder(step(name, seq), timeout=30)
                except grpc.aio.AioRpcError as exc:
                    # The outcome of this command is unknown (its commit may have
                    # been in flight): this aggregate sends nothing more.
                    failed.append((name, seq, exc.code()))
                    return
                answered[name] = seq
                seq += 1
                await asyncio.sleep(0.005)

        async def close_every_session() -> None:
            nonlocal terminated
            await asyncio.sleep(2)
            terminated = await world.scalar(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            killed.set()
            await asyncio.sleep(3)
            stop.set()

        async def after_the_kill() -> None:
            await killed.wait()
            await asyncio.sleep(0.2)
            async with asyncio.TaskGroup() as wave:
                for i in range(8):
                    wave.create_task(aggregate(f"after-{i}"))

        async with asyncio.TaskGroup() as group:
            for i in range(16):
                group.create_task(aggregate(f"before-{i:02d}"))
            group.create_task(close_every_session())
            group.create_task(after_the_kill())

        assert terminated >= 3, f"only {terminated} session(s) to end: gateway and relay?"
        assert failed, "no command was in flight when the sessions ended"
        assert {code for _, _, code in failed} == {grpc.StatusCode.UNAVAILABLE}, failed
        assert all(name.startswith("before-") for name, _, _ in failed), (
            f"commands failed after the gateway had new connections: {failed}"
        )
        after = {name: n for name, n in answered.items() if name.startswith("after-")}
        assert len(after) == 8, f"the gateway did not recover: {after}"
        assert all(n >= 5 for n in after.values()), after

        conn = await asyncpg.connect(world.dsn)
        try:
            rows = await conn.fetch("SELECT aggregate_id, seq FROM sequencer_state")
        finally:
            await conn.close()
        stored = {(r["aggregate_id"], int(r["seq"])) for r in rows}
        acknowledged = {(a, s) for a, n in answered.items() for s in range(1, n + 1)}
        assert acknowledged <= stored, "an acknowledged command left no state"
        assert len(stored - acknowledged) <= len(failed), "state nobody asked for"
        await reader.wait_for_all(stored, within=60)
        await asyncio.sleep(1)
        assert reader.pairs() == stored, "state rows and events differ"
    assert relay.alive, f"the relay died\n{relay.tail()}"
    assert "relay pass failed" in relay.output()  # it lost its session, and recovered
    assert "connection lost" in world.children[0].output()
    assert await outbox_counts(world) == {}
    print(
        f"\nsessions ended: {terminated}; failed in flight: {len(failed)};"
        f" acknowledged: {len(acknowledged)} ({sum(after.values())} after the kill)"
    )
