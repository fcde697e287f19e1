"""The checkout saga SIGKILLed again and again across many concurrent checkouts (issue 14).

Two processes run the sagas, on a fresh PostgreSQL database and fresh
Kafka topics (:mod:`tests.faults.apps.checkout`):

- the **saga** process, ``wirebus consume ...:saga_app --slice checkout``:
  relay, consumer of OrderPlaced and the payment replies, saga poller
  (recovery at start-up, then due timeouts);
- the **payments** process, ``wirebus consume ...:payments_app``: answers
  CapturePayment (and relays its answers).

The test process places ``--saga-checkouts`` orders (1,000 by default)
through its own mediator (no relay, no consumer, no saga poller: it never
runs a saga step). The outcome of each order is fixed by the order itself:

- 8 in 10 are **paid** (total under the limit): completed, order PAID,
  stock reserved once;
- 1 in 10 is **declined** (total over ``SHOP_PAYMENT_LIMIT_CENTS``):
  compensated, order CANCELLED, stock released;
- 1 in 10 is **silent** (a customer the payments app never answers): the
  payment step times out and the saga compensates.

What is deterministic, and how: a paid checkout must never time out, so
the answered checkouts (paid and declined, placed together) run first
with a payment timeout no answer can reach under the kills
(``ANSWERED_TIMEOUT``); once they are all final the saga process is
killed and comes back with a short timeout (``SILENT_TIMEOUT``), and the
silent checkouts are placed. The timeout a saga process applies is that
of its start-up settings, so no answered saga waits under the short one.

While the answered checkouts run, each process is SIGKILLed at a random
point 1-3 s after it was seen up and working (saga versions moving,
payments handled) and started again, ``SAGA_KILLS`` and
``PAYMENT_KILLS`` times; while the silent ones run, the saga process is
killed ``COMPENSATION_KILLS`` more times, 0.2-1 s after it came back,
once sagas are owed a compensation (waiting past their timeout, or
compensating). Killing stops once every saga of the phase is final. Kills land
mid-step (an in-process step's transaction), mid-reply (a reply handled,
its offset not committed), mid-timeout (a due timeout claimed, not
fired), mid-compensation and mid-publish (the relay's batch published,
not marked). ``SAGA_CRASH_SEED`` replays a run's kill points.

At the end every saga must be completed or compensated as its order says,
exactly once: its history holds each step's action (and compensation) once,
the app's tables hold each step's writes once (stock adds up exactly), and
Kafka holds exactly the messages that path implies. "Exactly once" on Kafka
is per ``ce_id`` -- what a consumer with an inbox sees -- which is the honest
guarantee of a transactional outbox with an at-least-once relay: a relay
killed after publishing and before marking its batch publishes it again,
with the same ``ce_id``s; those redelivered copies are allowed and counted.
A second *distinct* ``ce_id`` for one message of one saga (a step's command
sent twice, a reply answered twice, an order cancelled twice) is a failure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import os
import random
import re
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from shop.orders.v1 import orders_pb2
from sqlalchemy.engine import make_url

from examples.shop.app import ShopSettings, build_app
from examples.shop.inventory.messages import SetStock
from examples.shop.orders.messages import LineItem, PlaceOrder
from tests.faults.apps import checkout
from tests.faults.test_outbox_crashes import Child
from wirebus.kafka import ensure_topics
from wirebus.runtime import Runtime
from wirebus.settings import Settings
from wirebus.testing import wait_until
from wirebus.testing.databases import create_database, drop_database

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PYTHONPATH = os.pathsep.join(str(p) for p in (ROOT / "src", ROOT / "gen" / "python", ROOT))
APP = "tests.faults.apps.checkout"
LIMIT_CENTS = 100_000
ANSWERED_TIMEOUT = 600.0
"""The payment timeout while the answered checkouts run: none of them can time out."""
SILENT_TIMEOUT = 3.0
"""The payment timeout once they are final, while the silent checkouts run."""
SAGA_KILLS = 8
"""Kills of the saga process while checkouts run, and then ``COMPENSATION_KILLS`` more
once the silent checkouts' timeouts are due (mid-timeout, mid-compensation)."""
COMPENSATION_KILLS = 3
PAYMENT_KILLS = 5
SKUS = 5
STOCK = 1_000_000
PARTITIONS = 3
SEED = int(os.environ.get("SAGA_CRASH_SEED", "0")) or random.randrange(1, 2**31)

ACCEPT, RESERVE = "accept order", "reserve stock"
CAPTURE, CONFIRM = "capture payment", "confirm order"
FORWARD = [(ACCEPT, "action", "succeeded"), (RESERVE, "action", "succeeded")]
SENT = (CAPTURE, "action", "started")
BACKWARD = [(RESERVE, "compensation", "succeeded"), (ACCEPT, "compensation", "succeeded")]
HISTORY = {  # what each path's saga history holds, in order: every step once
    "paid": [
        *FORWARD,
        SENT,
        (CAPTURE, "action", "succeeded"),
        (CONFIRM, "action", "succeeded"),
    ],
    "declined": [*FORWARD, SENT, (CAPTURE, "action", "failed"), *BACKWARD],
    "silent": [*FORWARD, SENT, (CAPTURE, "action", "timed out"), *BACKWARD],
}
_STATUS_EVENTS = {"shop.orders.v1.OrderStatusChanged": 2, "shop.orders.v1.OrderSnapshot": 2}
_FIRST = {"shop.orders.v1.OrderPlaced": 1, "shop.payments.v1.CapturePayment": 1}
MESSAGES = {  # distinct ce_ids of each type on Kafka, per saga
    "paid": {**_FIRST, "shop.payments.v1.PaymentCaptured": 1, **_STATUS_EVENTS},
    "declined": {
        **_FIRST,
        "shop.payments.v1.PaymentDeclined": 1,
        "shop.orders.v1.OrderCancelled": 1,
        **_STATUS_EVENTS,
    },
    "silent": {**_FIRST, "shop.orders.v1.OrderCancelled": 1, **_STATUS_EVENTS},
}
FINAL = {"paid": ("completed", "PAID"), "declined": ("compensated", "CANCELLED")}
FINAL["silent"] = FINAL["declined"]
STATUSES = {"paid": {"PENDING", "PAID"}, "declined": {"PENDING", "CANCELLED"}}
STATUSES["silent"] = STATUSES["declined"]


# ---------------------------------------------------------------- the orders


@dataclasses.dataclass(frozen=True, slots=True)
class Planned:
    """One checkout: who buys what, and so which path its saga must take."""

    path: str  # "paid", "declined" or "silent"
    customer_id: str
    items: tuple[LineItem, ...]


def plan(count: int, prefix: str) -> list[Planned]:
    """``count`` checkouts: 8 in 10 paid, 1 in 10 declined, 1 in 10 silent (fixed by index)."""
    planned = []
    for i in range(count):
        path = {3: "declined", 7: "silent"}.get(i % 10, "paid")
        price = LIMIT_CENTS + 1 if path == "declined" else 1_000
        customer = f"{checkout.SILENT_PREFIX if path == 'silent' else 'c-'}{i}"
        items = tuple(
            LineItem(
                sku=f"{prefix}-sku-{(i + n) % SKUS}", quantity=1 + (i + n) % 3, price_cents=price
            )
            for n in range(1 + i % 2)
        )
        planned.append(Planned(path, customer, items))
    return planned


# ---------------------------------------------------------------- the processes


@dataclasses.dataclass
class Shop:
    """A fresh database and topics, and the processes that run the sagas on them."""

    bootstrap: str
    prefix: str
    database_url: str
    dsn: str
    tmp: Path
    payment_timeout: float = ANSWERED_TIMEOUT
    """The checkout's payment timeout of the saga processes started from now on."""
    children: list[Child] = dataclasses.field(default_factory=list)

    @property
    def topics(self) -> list[str]:
        return sorted(set(checkout.topics_of(self.prefix).values()))

    def spawn(self, name: str, args: list[str]) -> Child:
        env = {
            **os.environ,
            "PYTHONPATH": PYTHONPATH,
            "WIREBUS_KAFKA_BOOTSTRAP": self.bootstrap,
            "WIREBUS_DATABASE_URL": self.database_url,
            "CHECKOUT_TOPICS": self.prefix,
            "SHOP_PAYMENT_LIMIT_CENTS": str(LIMIT_CENTS),
            "SHOP_PAYMENT_TIMEOUT_SECONDS": str(self.payment_timeout),
        }
        log = self.tmp / f"{name}-{len(self.children)}.log"
        with log.open("wb") as err:
            popen = subprocess.Popen(
                [sys.executable, "-m", "wirebus", *args],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        child = Child(name, popen, log)
        self.children.append(child)
        return child

    def saga_process(self) -> Child:
        group = f"{self.prefix}-saga"
        return self.spawn(
            "saga",
            [
                "consume",
                f"{APP}:saga_app",
                "--group",
                group,
                "--slice",
                "checkout",
                "--log-level",
                "info",
            ],
        )

    def payments_process(self) -> Child:
        return self.spawn(
            "payments", ["consume", f"{APP}:payments_app", "--group", f"{self.prefix}-payments"]
        )

    def recovered(self) -> int:
        """Sagas the saga processes resumed at start-up (what the kills interrupted)."""
        found = (
            re.search(r"recovered (\d+) unfinished saga", line)
            for child in self.children
            if child.name == "saga"
            for line in child.output().splitlines()
        )
        return sum(int(m[1]) for m in found if m)

    def stop_all(self) -> None:
        for child in reversed(self.children):
            child.stop()

    def logs(self) -> str:
        return "\n".join(c.tail(15) for c in self.children if c.output().strip())

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.dsn)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    async def value(self, sql: str, *args: Any) -> Any:
        rows = await self.fetch(sql, *args)
        return rows[0][0] if rows else None


@pytest.fixture
async def shop(services: dict[str, str], fresh: str, tmp_path: Path) -> AsyncIterator[Shop]:
    admin_url = services["WIREBUS_DATABASE_URL"]
    name = f"it_{uuid.uuid4().hex[:12]}"
    url = make_url(await create_database(admin_url, name))
    shop = Shop(
        bootstrap=services["WIREBUS_KAFKA_BOOTSTRAP"],
        prefix=fresh,
        database_url=url.render_as_string(hide_password=False),
        dsn=url.set(drivername="postgresql").render_as_string(hide_password=False),
        tmp=tmp_path,
    )
    try:
        # plain topics, the snapshots' too: nothing is compacted away before it is counted
        await ensure_topics(shop.bootstrap, shop.topics, partitions=PARTITIONS)
        yield shop
    finally:
        shop.stop_all()
        await drop_database(admin_url, name)


@pytest.fixture
def own_topics(shop: Shop, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's shop events go to the test's topics too (as the children's do)."""
    for event, topic in checkout.topics_of(shop.prefix).items():
        monkeypatch.setattr(event, "__wirebus_topic__", topic)


# ---------------------------------------------------------------- the kills


OWED_COMPENSATION = (  # sagas compensating, or waiting past their timeout (to compensate)
    "SELECT count(*) FROM wirebus_saga WHERE status = 'compensating'"
    " OR (status = 'running' AND updated_at < now() - make_interval(secs => $1))"
)


@dataclasses.dataclass
class Kill:
    process: str
    after: float  # seconds since the test started
    owed: int  # sagas compensating or owed a compensation at the kill


class Killer:
    """SIGKILLs one process at random points while it works, and starts it again each time."""

    def __init__(
        self,
        shop: Shop,
        start: Callable[[], Child],
        progress: Callable[[], Awaitable[int]],
        rng: random.Random,
        started: float,
    ) -> None:
        self.shop = shop
        self.start = start
        self.progress = progress
        self.rng = rng
        self.started = started
        self.child = start()
        self.kills: list[Kill] = []

    async def run(
        self,
        times: int,
        *,
        when: Callable[[], Awaitable[bool]] | None = None,
        pause: tuple[float, float] = (1.0, 3.0),
    ) -> None:
        """Kill ``times`` times, ``pause`` (random) seconds after the process was seen working.

        ``when``: each kill waits for it too (sagas owed a compensation, say).
        Cancel it to stop killing: the process then runs on.
        """
        for _ in range(times):
            if when is not None:
                await wait_until(when, within=300, interval=0.2)
            await self._working()
            await asyncio.sleep(self.rng.uniform(*pause))
            await self.kill()

    async def kill(self) -> None:
        """SIGKILL the process and start it again at once (no await between: never left dead)."""
        self.child.kill()
        at = time.monotonic() - self.started
        self.child = self.start()
        owed = await self.shop.value(OWED_COMPENSATION, self.shop.payment_timeout)
        self.kills.append(Kill(self.child.name, at, owed))

    async def _working(self) -> None:
        """Until the process is up and moved something itself (the one before it is dead).

        A minute at most: a process may have nothing to do for a while (the
        saga process while the payments process is down, say).
        """
        before = await self.progress()
        while "wirebus consume:" not in self.child.output():
            assert self.child.alive, f"{self.child.name} exited\n{self.child.tail()}"
            await asyncio.sleep(0.1)
        deadline = time.monotonic() + 60
        while await self.progress() == before and time.monotonic() < deadline:
            assert self.child.alive, f"{self.child.name} exited\n{self.child.tail()}"
            await asyncio.sleep(0.1)


# ---------------------------------------------------------------- Kafka, read back


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    key: str
    ce_type: str
    ce_id: str
    value: bytes


async def read_all(bootstrap: str, topics: list[str]) -> list[Record]:
    """Every record of ``topics`` from their start to their end now (no group)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[Record] = []
        deadline = time.monotonic() + 120
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, "the topics were not read to their end in time"
            for messages in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                for m in messages:
                    headers = {k: v.decode() for k, v in m.headers}
                    records.append(
                        Record(m.key.decode(), headers["ce_type"], headers["ce_id"], m.value)
                    )
        return records
    finally:
        await consumer.stop()


# ---------------------------------------------------------------- the test


async def place_all(mediator: Any, planned: list[Planned]) -> dict[str, Planned]:
    """Place every checkout, 16 at a time; order id -> what was planned."""
    placed: dict[str, Planned] = {}
    limit = asyncio.Semaphore(16)

    async def one(p: Planned) -> None:
        async with limit:
            ref = await mediator.send(PlaceOrder(customer_id=p.customer_id, items=p.items))
        placed[ref.order_id] = p

    async with asyncio.TaskGroup() as group:
        for p in planned:
            group.create_task(one(p))
    return placed


async def statuses(shop: Shop) -> Counter[str]:
    rows = await shop.fetch("SELECT status, count(*) FROM wirebus_saga GROUP BY status")
    return Counter({r[0]: r[1] for r in rows})


@pytest.mark.usefixtures("own_topics")
async def test_sagas_killed_mid_flight_many_times_each_end_once_with_exactly_their_messages(
    shop: Shop, pytestconfig: pytest.Config, figures: list[str]
) -> None:
    count: int = pytestconfig.getoption("--saga-checkouts")
    rng = random.Random(SEED)
    started = time.monotonic()
    planned = plan(count, shop.prefix)
    answered_paths = [p for p in planned if p.path != "silent"]
    silent = [p for p in planned if p.path == "silent"]
    settings = Settings(database_url=shop.database_url, kafka_bootstrap=shop.bootstrap)
    app = build_app(ShopSettings(payment_limit_cents=LIMIT_CENTS))
    # the test's own mediator: it places orders; no relay, consumer or poller runs a saga here
    async with Runtime(app, settings, relay=False) as runtime:
        assert runtime.mediator is not None
        assert runtime.saga_poller is None
        mediator = runtime.mediator
        for n in range(SKUS):
            await mediator.send(SetStock(sku=f"{shop.prefix}-sku-{n}", available=STOCK))

        async def transitions() -> int:
            return int(await shop.value("SELECT coalesce(sum(version), 0) FROM wirebus_saga"))

        async def answered() -> int:
            group = f"{shop.prefix}-payments"
            sql = "SELECT count(*) FROM wirebus_inbox WHERE consumer_group = $1"
            return int(await shop.value(sql, group))

        async def owed() -> bool:
            return bool(await shop.value(OWED_COMPENSATION, shop.payment_timeout))

        saga = Killer(shop, shop.saga_process, transitions, rng, started)
        payments = Killer(shop, shop.payments_process, answered, rng, started)

        # 1. the answered checkouts, both processes killed while they run
        placed = await storm(
            shop,
            [saga.run(SAGA_KILLS), payments.run(PAYMENT_KILLS)],
            place_all(mediator, answered_paths),
        )
        answered_after = time.monotonic() - started
        # 2. the silent ones, on a short timeout: the saga process killed as they compensate
        shop.payment_timeout = SILENT_TIMEOUT
        await saga.kill()  # it comes back with the short timeout
        placed |= await storm(
            shop,
            [saga.run(COMPENSATION_KILLS, when=owed, pause=(0.2, 1.0))],
            place_all(mediator, silent),
        )
        finished_after = time.monotonic() - started
        # the last processes publish what the last transitions wrote
        pending = "SELECT count(*) FROM wirebus_outbox WHERE status = 'pending'"
        await wait_until(
            lambda: _zero(shop, pending), within=60, interval=0.2, message="the outbox drained"
        )
    records = await read_all(shop.bootstrap, shop.topics)
    shop.stop_all()

    verdict = await check(shop, placed, records)
    kills = sorted(saga.kills + payments.kills, key=lambda k: k.after)
    mid = sum(1 for k in kills if k.owed)
    figures.append(
        f"saga crashes (seed {SEED}): {len(answered_paths)} answered checkouts final after"
        f" {answered_after:.0f}s, {len(silent)} silent ones after {finished_after:.0f}s;"
        f" {len(saga.kills)} saga + {len(payments.kills)} payments SIGKILLs"
        f" (at {', '.join(f'{k.process} {k.after:.0f}s' for k in kills)}; {mid} with sagas"
        f" compensating or owed a compensation; {shop.recovered()} sagas resumed by the"
        f" restarted processes' recovery); sagas {verdict['completed']} completed,"
        f" {verdict['compensated']} compensated ({verdict['declined']} declined,"
        f" {verdict['silent']} timed out); {verdict['records']} records, {verdict['unique']}"
        f" distinct ce_ids, {verdict['duplicates']} redelivered copies; slowest payment answer"
        f" {verdict['slowest']}s"
    )
    assert saga.kills, "the saga process was never killed"
    if count >= 500:  # a quick local run may end before the kills reach every window
        assert len(kills) >= 5, f"only {len(kills)} kill(s) before every saga ended: {kills}"
        assert payments.kills, "the payments process was never killed"
        assert mid, "no kill hit a saga compensating or owed a compensation"


async def storm(
    shop: Shop,
    kills: list[Coroutine[Any, Any, None]],
    placing: Awaitable[dict[str, Planned]],
) -> dict[str, Planned]:
    """Place checkouts while ``kills`` run; once every saga is final, stop killing."""
    storms = [asyncio.create_task(k) for k in kills]
    last: Counter[str] = Counter()
    try:
        placed = await placing
        expected = await shop.value("SELECT count(*) FROM shop_orders")

        async def all_final() -> bool:
            for task in storms:  # a storm that failed (a process died by itself) says why
                if task.done():
                    task.result()
            last.clear()
            last.update(await statuses(shop))
            return last["completed"] + last["compensated"] == expected

        await wait_until(
            all_final,
            within=300,
            interval=0.5,
            message=lambda: f"every saga final; sagas now: {dict(last)}\n{shop.logs()}",
        )
    finally:
        for task in storms:
            task.cancel()
        await asyncio.gather(*storms, return_exceptions=True)
    return placed


async def _zero(shop: Shop, sql: str) -> bool:
    return int(await shop.value(sql)) == 0


async def check(shop: Shop, placed: dict[str, Planned], records: list[Record]) -> dict[str, int]:
    """Every saga's end, history, writes and messages are those of its path, once."""
    rows = await shop.fetch("SELECT key, status, history FROM wirebus_saga")
    sagas = {r["key"]: r for r in rows}
    assert sagas.keys() == placed.keys(), (
        f"sagas missing for {len(placed.keys() - sagas.keys())} order(s),"
        f" sagas of no order: {len(sagas.keys() - placed.keys())}"
    )
    orders = {r[0]: r[1] for r in await shop.fetch("SELECT order_id, status FROM shop_orders")}
    wrong_end, wrong_history = [], []
    slowest = 0.0  # seconds from CapturePayment sent to its answer handled
    for order_id, p in placed.items():
        status, order_status = FINAL[p.path]
        state = sagas[order_id]
        entries = _json(state["history"])
        if (state["status"], orders.get(order_id)) != (status, order_status):
            ends = (state["status"], orders.get(order_id), state["error"])
            steps = [(h["step"], h["outcome"], h["at"][11:22]) for h in entries]
            wrong_end.append((order_id, p.path, *ends, steps))
        history = [(h["step"], h["phase"], h["outcome"]) for h in entries]
        waited = [dt.datetime.fromisoformat(h["at"]) for h in entries if h["step"] == CAPTURE]
        if p.path != "silent" and len(waited) == 2:
            slowest = max(slowest, (waited[1] - waited[0]).total_seconds())
        if history != HISTORY[p.path]:
            wrong_history.append((order_id, p.path, history))
    assert not wrong_end, f"{len(wrong_end)} saga(s) ended off their path, e.g. {wrong_end[:3]}"
    assert not wrong_history, (
        f"{len(wrong_history)} saga(s) ran a step twice or skipped one, e.g. {wrong_history[:3]}"
    )

    # the steps' own writes, once: reservations of completed orders only, stock adds up exactly
    wanted: dict[tuple[str, str], int] = defaultdict(int)
    for order_id, p in placed.items():
        if p.path == "paid":
            for item in p.items:
                wanted[(order_id, item.sku)] += item.quantity
    held = {
        (r[0], r[1]): r[2]
        for r in await shop.fetch("SELECT order_id, sku, quantity FROM shop_reservations")
    }
    assert held == dict(wanted), "reservations are not exactly those of the completed orders"
    taken: dict[str, int] = defaultdict(int)
    for (_, sku), quantity in wanted.items():
        taken[sku] += quantity
    stock = {r[0]: r[1] for r in await shop.fetch("SELECT sku, available FROM shop_stock")}
    assert stock == {sku: STOCK - taken[sku] for sku in stock}, (
        f"stock is not {STOCK} minus what completed orders reserved: {stock}, taken {dict(taken)}"
    )

    # Kafka: exactly the implied messages, per ce_id; copies of one ce_id are redeliveries
    ids: dict[tuple[str, str], set[str]] = defaultdict(set)
    moves: dict[str, set[str]] = defaultdict(set)
    copies: Counter[str] = Counter()
    for r in records:
        ids[(r.key, r.ce_type)].add(r.ce_id)
        copies[r.ce_id] += 1
        if r.ce_type == "shop.orders.v1.OrderStatusChanged":
            moves[r.key].add(
                orders_pb2.OrderStatus.Name(
                    orders_pb2.OrderStatusChanged.FromString(r.value).status
                ).removeprefix("ORDER_STATUS_")
            )
    unknown = {key for key, _ in ids} - placed.keys()
    assert not unknown, f"records of orders nobody placed: {sorted(unknown)[:5]}"
    wrong_messages, wrong_moves = [], []
    for order_id, p in placed.items():
        have = {tp: len(ids.get((order_id, tp), ())) for tp in _TYPES}
        want = {tp: MESSAGES[p.path].get(tp, 0) for tp in _TYPES}
        if have != want:
            wrong_messages.append((order_id, p.path, {t: n for t, n in have.items() if n}))
        if moves[order_id] != STATUSES[p.path]:
            wrong_moves.append((order_id, p.path, moves[order_id]))
    assert not wrong_messages, (
        f"{len(wrong_messages)} saga(s) with other messages than their path's (distinct ce_ids"
        f" per type), e.g. {wrong_messages[:3]}"
    )
    assert not wrong_moves, f"status moves off the path, e.g. {wrong_moves[:5]}"
    paths = Counter(p.path for p in placed.values())
    return {
        "completed": paths["paid"],
        "compensated": paths["declined"] + paths["silent"],
        "declined": paths["declined"],
        "silent": paths["silent"],
        "records": len(records),
        "unique": len(copies),
        "duplicates": len(records) - len(copies),
        "slowest": round(slowest),
    }


_TYPES = sorted({tp for messages in MESSAGES.values() for tp in messages})


def _json(value: Any) -> list[dict[str, Any]]:
    return json.loads(value) if isinstance(value, str) else list(value)
