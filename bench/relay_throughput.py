"""Outbox relay throughput: wirebus ``Relay`` vs a raw aiokafka producer, same rows, same run.

Needs Kafka (``WIREBUS_KAFKA_BOOTSTRAP``) and PostgreSQL (``WIREBUS_DATABASE_URL``,
``postgresql+asyncpg://...``; the role must be allowed to CREATE DATABASE):
``scripts/services start`` then ``eval "$(scripts/services env)"``. Each run creates
a fresh database ``wirebus_bench_<hex>`` next to the one in the URL and drops it at
the end; every row writes to a fresh topic (3 partitions), deleted at the end.

Filling (untimed, every round): N ``OrderPlaced`` events (3 items; the key
``order_id`` takes 100 distinct values, i.e. 100 aggregates spread over the
64 shards) are encoded with ``EventEncoder.record`` and turned into rows with
``wirebus.outbox.rows.row_from_record`` -- exactly what ``UnitOfWork.commit``
writes -- and **bulk-inserted** into ``wirebus_outbox`` (5,000 rows per
``INSERT``), not written by N commands through the mediator (that would take
minutes and measures the command path, not the relay).

Rows (N = 50,000, ``--quick`` 5,000; ``--rounds`` 3, median reported):

  raw     baseline: the table's rows are read back (topic, key, value, headers),
          turned into aiokafka arguments untimed, then sent by a raw
          ``AIOKafkaProducer`` with ``KafkaEventPublisher``'s options
          (idempotent, ``acks=all``, ``linger_ms=5``, 1 MiB batches), all futures
          awaited at the end: the Kafka half of relaying, with no database work
  relay   ``wirebus.outbox.Relay(Database, KafkaEventPublisher)`` (defaults:
          batch 2,000, its default; --batch-size) drains the table: from ``run()`` until ``pending == 0``
          (``relay.published == N``, then ``outbox_stats`` confirms it). Claims
          rows ``FOR UPDATE SKIP LOCKED``, publishes, deletes them, commits.
  cqrs    python-cqrs 5.3.0: ``SqlAlchemyOutboxedEventRepository`` (its own
          ``outbox`` table in the same database, filled with ``repository.add``
          of ``NotificationEvent`` subclasses serialized with its
          ``ProtobufEventSerializer`` -- the same protobuf payload) and
          ``EventProducer`` + ``KafkaMessageBroker`` draining it with the loop
          its README shows (``event_batch_generator``, ``send_message`` per
          event, ``repository.commit()`` per batch of 100), on the producer of
          ``kafka_producer_factory`` (aiokafka defaults: ``acks=1``, no
          idempotence, ``linger_ms=0``; its ``produce`` is ``send_and_wait``,
          one record in flight at a time). Bounded by ``--cqrs-timeout``
          seconds: the rate is then over the events it drained.

Each producer first sends 500 warm-up records to its topic (untimed).
"CPU µs/event" is this process's user+sys time per event (PostgreSQL and the
broker are other processes on the same 2 cores and are not counted).
Target: relay / raw >= 0.8 (events/s).

Run: ``PYTHONPATH=gen/python:. .venv/bin/python bench/relay_throughput.py [--quick] [--json out.json]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import dataclasses
import datetime as dt
import gc
import io
import os
import pstats
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_info, print_table, run_loop, write_json
from kafka_throughput import (
    ITEMS,
    PLACED_AT,
    Window,
    delete_topics,
    raw_producer,
)
from shop.orders.v1 import orders_pb2
from sqlalchemy import func, insert, select
from sqlalchemy.engine import make_url

from examples.shop.orders.messages import OrderPlaced
from wirebus.broker import EventEncoder, now_rfc3339
from wirebus.codec import EventRegistry
from wirebus.db import Database, outbox_table, utcnow
from wirebus.kafka import KafkaEventPublisher, ensure_topics
from wirebus.outbox import Relay
from wirebus.outbox.rows import row_from_record, unpack_headers

KAFKA_ENV = "WIREBUS_KAFKA_BOOTSTRAP"
DB_ENV = "WIREBUS_DATABASE_URL"
PARTITIONS = 3
WARMUP = 500
AGGREGATES = 100
INSERT_CHUNK = 5_000
ROW_TIMEOUT_S = 240.0
POLL_S = 0.002
SOURCE = "bench"

ROWS = {
    "raw": "raw AIOKafkaProducer, the table's pre-serialized rows",
    "relay": "wirebus Relay draining wirebus_outbox (--batch-size)",
    "cqrs": "python-cqrs SqlAlchemy outbox + EventProducer + KafkaMessageBroker",
}


def usable_env() -> tuple[str, str] | None:
    """(bootstrap, database URL) when both services are configured, else None."""
    bootstrap = os.environ.get(KAFKA_ENV)
    url = os.environ.get(DB_ENV, "")
    if not bootstrap or not url.startswith("postgresql"):
        return None
    return bootstrap, url


# ---------------------------------------------------------------- fresh database


@contextlib.asynccontextmanager
async def fresh_database(url: str, prefix: str = "wirebus_bench") -> Any:
    """A new, empty database on the server of ``url`` (dropped on exit); yields its URL."""
    from wirebus.testing import postgres_database

    async with postgres_database(url, prefix) as created:
        yield created


# ---------------------------------------------------------------- events and rows


def registry_for(topic: str) -> EventRegistry:
    registry = EventRegistry()
    registry.add(OrderPlaced, topic=topic)
    return registry


def make_events(n: int) -> list[OrderPlaced]:
    return [
        OrderPlaced(
            order_id=f"order-{i % AGGREGATES:04d}",
            customer_id=f"customer-{i % 97}",
            items=ITEMS,
            total_cents=3 * 120 + 250 + 12 * 45,
            placed_at=PLACED_AT,
        )
        for i in range(n)
    ]


async def fill_outbox(database: Database, events: list[OrderPlaced], topic: str) -> float:
    """Bulk-insert the outbox rows ``UnitOfWork.commit`` would write; seconds taken."""
    encoder = EventEncoder(registry_for(topic), source=SOURCE)
    t0 = time.perf_counter()
    now, stamp = utcnow(), now_rfc3339()
    rows = [row_from_record(encoder.record(e, time=stamp), now) for e in events]
    async with database.engine.begin() as conn:
        for i in range(0, len(rows), INSERT_CHUNK):
            await conn.execute(insert(outbox_table), rows[i : i + INSERT_CHUNK])
    return time.perf_counter() - t0


async def read_rows(
    database: Database,
) -> list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]:
    """The pending rows as aiokafka arguments (key, value, headers), in id order."""
    t = outbox_table
    async with database.engine.connect() as conn:
        result = await conn.execute(
            select(t.c.key, t.c.value, t.c.headers).where(t.c.status == "pending").order_by(t.c.id)
        )
        return [(key, value, list(unpack_headers(headers))) for key, value, headers in result]


async def pending(database: Database) -> int:
    async with database.engine.connect() as conn:
        return int(
            (
                await conn.execute(select(func.count()).where(outbox_table.c.status == "pending"))
            ).scalar_one()
        )


# ---------------------------------------------------------------- rows


async def row_raw(bootstrap: str, database: Database, topic: str, n: int) -> dict[str, Any]:
    raw = await read_rows(database)
    assert len(raw) == n, (len(raw), n)
    return await raw_producer(bootstrap, topic, raw)


async def row_relay(
    bootstrap: str, database: Database, topic: str, n: int, batch_size: int
) -> dict[str, Any]:
    """Relay the whole table; the clock runs from ``run()`` until nothing is pending."""
    publisher = KafkaEventPublisher(bootstrap, registry_for(topic), source=SOURCE)
    await publisher.start()
    relay = Relay(database, publisher, batch_size=batch_size)
    try:
        # warm-up: the same connection and topic metadata the raw row gets
        warm = EventEncoder(registry_for(topic), source=SOURCE).records(make_events(WARMUP))
        await publisher.send_records(list(warm))
        t_start = time.perf_counter()
        await relay.start()
        deadline = time.perf_counter() + ROW_TIMEOUT_S
        w = Window().__enter__()
        task = asyncio.create_task(relay.run())
        try:
            while True:
                if relay.published >= n and await pending(database) == 0:
                    w.stop()
                    break
                if task.done():
                    task.result()
                    raise RuntimeError("the relay stopped early")
                if time.perf_counter() > deadline:
                    for t in asyncio.all_tasks():  # what it is stuck on
                        t.print_stack(file=sys.stderr)
                    raise TimeoutError(f"the relay did not drain {n} rows in {ROW_TIMEOUT_S} s")
                await asyncio.sleep(POLL_S)
        finally:
            await relay.stop()
            await asyncio.wait_for(task, 30)
    finally:
        await publisher.stop()
    if relay.failed:
        raise RuntimeError(f"{relay.failed} rows failed")
    return w.result(relay.published, wall_from_start_s=w.t1 - t_start)


# ---------------------------------------------------------------- python-cqrs


def _cqrs_types() -> dict[str, Any]:
    """python-cqrs notification event, codec map and ORM model (built once, lazily)."""
    import cqrs
    from cqrs.mapping.outbox import OutboxedEventMap
    from cqrs.outbox.sqlalchemy import OutboxModel
    from cqrs.serializers.protobuf import ProtobufEventSerializer

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Payload:
        order_id: str
        customer_id: str
        items: tuple[tuple[str, int, int], ...]
        total_cents: int
        placed_at: dt.datetime

    class OrderPlacedNotification(cqrs.NotificationEvent[Payload]):
        event_name: str = "OrderPlaced"

        def proto(self) -> Any:
            p = self.payload
            msg = orders_pb2.OrderPlaced(
                order_id=p.order_id,
                customer_id=p.customer_id,
                items=[
                    orders_pb2.LineItem(sku=s, quantity=q, price_cents=c) for s, q, c in p.items
                ],
                total_cents=p.total_cents,
            )
            msg.placed_at.FromDatetime(p.placed_at)
            return msg

        @classmethod
        def from_proto(cls, proto: Any) -> Any:
            return cls(
                topic="",  # the row's topic is what is used to send
                payload=Payload(
                    order_id=proto.order_id,
                    customer_id=proto.customer_id,
                    items=tuple((i.sku, i.quantity, i.price_cents) for i in proto.items),
                    total_cents=proto.total_cents,
                    placed_at=proto.placed_at.ToDatetime(tzinfo=dt.UTC),
                ),
            )

    event_map = OutboxedEventMap()
    event_map.register(
        "OrderPlaced",
        OrderPlacedNotification,
        ProtobufEventSerializer({OrderPlacedNotification: orders_pb2.OrderPlaced}),
    )
    return {
        "event": OrderPlacedNotification,
        "payload": Payload,
        "map": event_map,
        "model": OutboxModel,
    }


async def row_cqrs(
    bootstrap: str, database: Database, topic: str, n: int, timeout_s: float
) -> dict[str, Any]:
    import cqrs
    from cqrs.adapters.kafka import kafka_producer_factory
    from cqrs.message_brokers.kafka import KafkaMessageBroker
    from cqrs.outbox.repository import EventStatus

    types = _cqrs_types()
    model, event_cls, payload_cls = types["model"], types["event"], types["payload"]
    async with database.engine.begin() as conn:
        await conn.run_sync(model.metadata.create_all)
    # fill (untimed): N notifications through repository.add, committed in chunks
    items = tuple((i.sku, i.quantity, i.price_cents) for i in ITEMS)
    for start in range(0, n, INSERT_CHUNK):
        async with database.sessions() as session:
            repo = cqrs.SqlAlchemyOutboxedEventRepository(session, event_map=types["map"])
            for i in range(start, min(n, start + INSERT_CHUNK)):
                repo.add(
                    event_cls(
                        topic=topic,
                        payload=payload_cls(
                            order_id=f"order-{i % AGGREGATES:04d}",
                            customer_id=f"customer-{i % 97}",
                            items=items,
                            total_cents=3 * 120 + 250 + 12 * 45,
                            placed_at=PLACED_AT,
                        ),
                    )
                )
            await repo.commit()

    kafka_producer = kafka_producer_factory(dsn=bootstrap)
    await kafka_producer._producer.start()
    broker = KafkaMessageBroker(kafka_producer)
    try:
        # warm-up: 500 sends on the same path (metadata, connection)
        for i in range(WARMUP):
            await kafka_producer.produce(topic, b"warm-up %d" % i)
        sent = 0
        deadline = time.perf_counter() + timeout_s
        timed_out = False
        async with database.sessions() as session:
            repo = cqrs.SqlAlchemyOutboxedEventRepository(session, event_map=types["map"])
            producer = cqrs.EventProducer(broker, repo)
            with Window() as w:
                async for messages in producer.event_batch_generator():
                    if not messages:
                        break
                    for message in messages:
                        await producer.send_message(message)
                    await producer.repository.commit()
                    sent += len(messages)
                    if time.perf_counter() > deadline:
                        timed_out = True
                        break
        async with database.sessions() as session:
            produced = (
                await session.execute(
                    select(func.count())
                    .select_from(model)
                    .where(model.event_status == EventStatus.PRODUCED)
                )
            ).scalar_one()
    finally:
        await kafka_producer._producer.stop()
    if produced != sent:
        raise RuntimeError(f"python-cqrs marked {produced} of {sent} events produced")
    return w.result(sent, timed_out=timed_out, of=n)


# ---------------------------------------------------------------- driver


async def measure(
    args: argparse.Namespace, bootstrap: str, url: str
) -> dict[str, list[dict[str, Any]]]:
    run_id = uuid.uuid4().hex[:8]
    samples: dict[str, list[dict[str, Any]]] = {k: [] for k in ROWS}
    created: list[str] = []
    events = make_events(args.n)

    async def fresh_topic(name: str) -> str:
        topic = f"wirebus-bench-{run_id}-{name}"
        await ensure_topics(bootstrap, [topic], partitions=PARTITIONS)
        created.append(topic)
        return topic

    async with fresh_database(url) as db_url:
        print(f"  fresh database {make_url(db_url).database}", file=sys.stderr, flush=True)
        database = Database(db_url, create_schema=True)
        await database.start()
        try:
            rows = [k for k in ("raw", "relay") if k in args.rows]
            for rnd in range(args.rounds):
                topic_relay = await fresh_topic(f"relay-{rnd}")
                fill_s = await fill_outbox(database, events, topic_relay)
                print(
                    f"  round {rnd + 1}: filled {args.n:,} rows in {fill_s:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
                order = rows if rnd % 2 == 0 else rows[::-1]
                # raw only reads the rows, so it can go before or after... but the
                # relay deletes them: read them first when raw comes second.
                for key in order:
                    gc.collect()
                    if key == "raw":
                        if await pending(database) != args.n:  # relay went first: refill
                            await fill_outbox(database, events, topic_relay)
                        r = await row_raw(
                            bootstrap, database, await fresh_topic(f"raw-{rnd}"), args.n
                        )
                    else:
                        if await pending(database) != args.n:
                            raise RuntimeError("the outbox is not full before the relay row")
                        r = await row_relay(
                            bootstrap, database, topic_relay, args.n, args.batch_size
                        )
                    samples[key].append(r)
                    _progress(key, rnd, r)
                # leave the table empty for the next round
                async with database.engine.begin() as conn:
                    await conn.execute(outbox_table.delete())
            if "cqrs" in args.rows:
                gc.collect()
                r = await row_cqrs(
                    bootstrap, database, await fresh_topic("cqrs"), args.n, args.cqrs_timeout
                )
                samples["cqrs"].append(r)
                _progress("cqrs", 0, r)
        finally:
            await database.close()
            if created and not args.keep_topics:
                try:
                    await delete_topics(bootstrap, created)
                except Exception as exc:
                    print(f"could not delete the bench topics: {exc}", file=sys.stderr)
    return samples


def _progress(key: str, rnd: int, r: dict[str, Any]) -> None:
    extra = " (time limit reached)" if r.get("timed_out") else ""
    print(
        f"  round {rnd + 1} {key}: {r['events_per_s']:10,.0f} events/s"
        f"  {r['cpu_us_per_event']:6.1f} µs CPU/event  ({r['events']} events,"
        f" {r['seconds']:.2f} s){extra}",
        file=sys.stderr,
        flush=True,
    )


def summarize(samples: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    for key, runs in samples.items():
        if not runs:
            continue
        rates = sorted(r["events_per_s"] for r in runs)
        row = {
            "key": key,
            "label": ROWS[key],
            "events_per_s": statistics.median(rates),
            "events_per_s_min": rates[0],
            "events_per_s_max": rates[-1],
            "cpu_us_per_event": statistics.median(r["cpu_us_per_event"] for r in runs),
            "events": runs[0]["events"],
            "rounds": len(runs),
            "timed_out": any(r.get("timed_out") for r in runs),
            "runs": runs,
        }
        rows.append(row)
    by = {r["key"]: r for r in rows}
    base = by.get("raw")
    for r in rows:
        r["ratio"] = r["events_per_s"] / base["events_per_s"] if base else None
        r["cpu_ratio"] = r["cpu_us_per_event"] / base["cpu_us_per_event"] if base else None
    return rows


def profile(args: argparse.Namespace, bootstrap: str, url: str) -> None:
    """Run the relay row once under cProfile and print where its time goes."""

    async def go() -> None:
        topic = f"wirebus-bench-{uuid.uuid4().hex[:8]}-profile-relay"
        await ensure_topics(bootstrap, [topic], partitions=PARTITIONS)
        try:
            async with fresh_database(url) as db_url:
                database = Database(db_url, create_schema=True)
                await database.start()
                try:
                    await fill_outbox(database, make_events(args.n), topic)
                    prof = cProfile.Profile()
                    prof.enable()
                    r = await row_relay(bootstrap, database, topic, args.n, args.batch_size)
                    prof.disable()
                finally:
                    await database.close()
        finally:
            if not args.keep_topics:
                await delete_topics(bootstrap, [topic])
        _progress("relay", 0, r)
        out = io.StringIO()
        stats = pstats.Stats(prof, stream=out)
        stats.sort_stats("tottime").print_stats(30)
        stats.sort_stats("cumulative").print_stats(45)
        print(out.getvalue())

    run_loop(go())


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5,000 rows per round")
    ap.add_argument("--n", type=int, default=None, help="rows per round (default 50,000)")
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="rounds of raw + relay (default 1: a 50,000-row relay round takes minutes)",
    )
    ap.add_argument("--batch-size", type=int, default=2000, help="Relay batch_size (its default)")
    ap.add_argument("--rows", default=",".join(ROWS), help="subset of raw,relay,cqrs")
    ap.add_argument(
        "--cqrs-timeout",
        type=float,
        default=None,
        help="seconds python-cqrs may drain (60; quick 30)",
    )
    ap.add_argument("--keep-topics", action="store_true")
    ap.add_argument("--profile", action="store_true", help="run the relay row once under cProfile")
    ap.add_argument("--json", default=None, help="write results here")
    args = ap.parse_args(argv)
    env = usable_env()
    if env is None:
        print(f"relay_throughput: skipped, needs {KAFKA_ENV} and a postgresql {DB_ENV}")
        return None
    bootstrap, url = env
    args.n = args.n or (5_000 if args.quick else 50_000)
    args.cqrs_timeout = args.cqrs_timeout or (30.0 if args.quick else 60.0)
    args.rows = [r for r in args.rows.split(",") if r]
    if set(args.rows) - set(ROWS) or args.n < WARMUP or args.rounds < 1:
        ap.error("bad --rows, --n (>= 500) or --rounds")
    print(machine_info(), file=sys.stderr)
    if args.profile:
        profile(args, bootstrap, url)
        return None

    rows = summarize(run_loop(measure(args, bootstrap, url)))
    by = {r["key"]: r for r in rows}
    ratios = {
        f"{k}_over_raw": by[k]["ratio"] for k in ("relay", "cqrs") if k in by and by[k]["ratio"]
    }
    if "relay" in by and "cqrs" in by:
        ratios["relay_over_cqrs"] = by["relay"]["events_per_s"] / by["cqrs"]["events_per_s"]
    print_table(
        f"relay_throughput ({args.n:,} rows, relay batch {args.batch_size}, median of"
        f" {args.rounds} round(s); cqrs 1 round, broker {bootstrap})",
        ["row", "what", "events/s", "min", "max", "x raw", "CPU µs/event", "x raw CPU"],
        [
            [
                r["key"],
                r["label"] + (" (time limit)" if r["timed_out"] else ""),
                r["events_per_s"],
                r["events_per_s_min"],
                r["events_per_s_max"],
                r["ratio"],
                r["cpu_us_per_event"],
                r["cpu_ratio"],
            ]
            for r in rows
        ],
    )
    if "relay_over_raw" in ratios:
        v = ratios["relay_over_raw"]
        print(f"\nrelay / raw = {v:.2f} ({'met' if v >= 0.8 else 'MISSED'}, target >= 0.8)")
    result = {
        "bench": "relay_throughput",
        "n": args.n,
        "rounds": args.rounds,
        "batch_size": args.batch_size,
        "fill": "bulk insert of row_from_record(EventEncoder.record(...)) rows",
        "rows": rows,
        "ratios": ratios,
    }
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
