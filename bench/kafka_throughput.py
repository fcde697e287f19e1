"""Kafka throughput: wirebus publisher and consumer vs raw aiokafka, same broker, same run.

Needs a Kafka broker: ``WIREBUS_KAFKA_BOOTSTRAP`` (``scripts/services start kafka``
then ``eval "$(scripts/services env)"``; 127.0.0.1 only). Every row writes to or
reads from a fresh topic (3 partitions, ``wirebus.kafka.ensure_topics``) or a fresh
consumer group; the topics are deleted at the end (``--keep-topics`` to keep them).

Events: ``examples.shop.orders.messages.OrderPlaced`` with 3 items (key ``order_id``,
a distinct id per event, so records spread over the partitions).

Publisher rows (N events, default 50,000, ``--quick`` 5,000; each producer sends a
warm-up of 500 records to its topic first, untimed):

  pub_a   raw ``AIOKafkaProducer`` with the options ``KafkaEventPublisher`` uses
          (``enable_idempotence=True, acks="all", linger_ms=5``, 1 MiB batches):
          ``await send()`` of the pre-serialized value + key + headers of every
          record, all futures awaited at the end
  pub_b   ``KafkaEventPublisher.publish_many`` of all N events in one call, encoding
          included (``proto()`` + ``SerializeToString`` + CloudEvents headers): the
          same pattern as pub_a (hand everything over, wait for every ack at the end)
  pub_e   ``publish_many`` in chunks of ``--chunk`` (500) events, each call waiting
          for its acks before the next one is encoded (context: a caller that
          publishes in small groups pays a round trip per group)
  pub_c   ``KafkaEventPublisher.send_records`` of the pre-encoded records, same chunks
          (no encoding)
  pub_d   ``send_records`` of all N pre-encoded records in one call (no encoding,
          no chunking: the same pattern as pub_a)
  pub_h   context, not a target: pub_a plus the encoding done by hand in the send
          loop (``event.proto().SerializeToString()``, the key, the same CloudEvents
          headers built inline), i.e. the least work a hand-written publisher of these
          dataclasses does

Consumer rows (a topic pre-filled with N wirebus-encoded records, read to the end
by a fresh consumer group each time):

  con_a   raw ``AIOKafkaConsumer`` loop (manual commits): ``getmany(max_records=500)``,
          ``orders_pb2.OrderPlaced.FromString(value)`` per record, ``commit`` of the
          batch's offsets, until N records were read
  con_b   wirebus ``ConsumerRunner`` + ``EventProcessor`` + ``KafkaConsumer``, one no-op
          async handler for ``OrderPlaced``, ``InMemoryInbox``, a ``KafkaEventPublisher``
          as ``dead_letters``; stopped once ``runner.outcomes["handled"] == N``
  con_h   con_a plus the work the processor must do, by hand: the CloudEvents checks
          (``ce_specversion`` 1.0, content-type, ``ce_source``/``ce_time`` present),
          ``ce_type``/``ce_id`` read from the headers, ``OrderPlaced.from_proto``, the
          no-op handler awaited, a set of ids as inbox (the peer of con_b: con_b / con_h
          >= 0.8 is the target)
  con_g   con_b with a handler taking the generated ``orders_pb2.OrderPlaced``
          (no ``from_proto``): the peer of con_a (``_consumer_peers.py``)
  con_f   FastStream's aiokafka subscriber, ``FromString`` decoder, no-op handler
          (``apply_types=False``, default ack policy, ``logger=None``;
          ``_consumer_peers.py``); con_fd the same as FastStream documents it (context)

Consumer rates are steady-state: from the first handled record to the N-th
(the group join is left out; the wall time from ``start()`` is shown too). CPU
is this process's user+sys time per event over the timed window (the broker runs
on the same machine and is not counted). Each row runs ``--rounds`` times (order
rotated, fresh topic/group every time) and the median is reported.

Targets: pub_b / pub_a >= 0.9, con_b / con_a >= 0.8, con_b / con_h >= 0.8 (the same
work by hand), con_g / con_a >= 0.8, wirebus / FastStream >= 3 (con_b / con_f,
con_g / con_f), all in events/s. Also reported: con_f / con_a.

Run: ``PYTHONPATH=gen/python:. .venv/bin/python bench/kafka_throughput.py [--quick] [--json out.json]``
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import gc
import io
import os
import pstats
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Window, machine_info, print_table, run_loop, write_json
from _consumer_peers import PEER_FUNCS, PEER_ROWS
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from shop.orders.v1 import orders_pb2

from examples.shop.orders.messages import LineItem, OrderPlaced
from wirebus import App, Router
from wirebus.broker import EventEncoder, OutgoingRecord
from wirebus.codec import EventRegistry
from wirebus.consumer import EventProcessor

try:  # a baseline checkout (bench/compare.py) may predate the module
    from wirebus.consumer_runner import ConsumerRunner
except ImportError:  # pragma: no cover
    from wirebus.consumer import ConsumerRunner  # type: ignore[attr-defined,no-redef]
from wirebus.inbox import InMemoryInbox
from wirebus.kafka import KafkaConsumer, KafkaEventPublisher, ensure_topics

ENV = "WIREBUS_KAFKA_BOOTSTRAP"
PARTITIONS = 3
WARMUP = 500
MAX_RECORDS = 500  # per getmany, as wirebus.kafka.KafkaConsumer
ROW_TIMEOUT_S = 180.0  # every timed loop gives up after this
POLL_S = 0.002  # how often the wirebus row looks at runner.outcomes
SOURCE = "bench"

# What KafkaEventPublisher passes to AIOKafkaProducer (publisher.py), so that the
# raw row differs from the wirebus rows only by the wrapper and the encoding.
PRODUCER_OPTIONS: dict[str, Any] = {
    "enable_idempotence": True,
    "acks": "all",
    "linger_ms": 5,
    "compression_type": None,
    "max_batch_size": 1024 * 1024,
    "max_request_size": 1024 * 1024,
    "request_timeout_ms": 30_000,
}

PUB_ROWS = {
    "pub_a": "raw AIOKafkaProducer send(), await all at the end",
    "pub_b": "wirebus publish_many (one call, encoding included)",
    "pub_e": "wirebus publish_many (chunks, encoding included)",
    "pub_c": "wirebus send_records (chunks, pre-encoded)",
    "pub_d": "wirebus send_records (one call, pre-encoded)",
    "pub_h": "raw producer + encoding by hand (context)",
}
CON_ROWS = {
    "con_a": "raw AIOKafkaConsumer getmany + FromString + commit",
    "con_b": "wirebus ConsumerRunner + EventProcessor, no-op handler",
    "con_h": "raw consumer + same work by hand (context)",
} | PEER_ROWS

ITEMS = (
    LineItem(sku="SKU-APPLE", quantity=3, price_cents=120),
    LineItem(sku="SKU-PEAR", quantity=1, price_cents=250),
    LineItem(sku="SKU-PLUM", quantity=12, price_cents=45),
)
PLACED_AT = dt.datetime(2025, 3, 14, 15, 9, 26, 535897, tzinfo=dt.UTC)


def make_events(n: int) -> list[OrderPlaced]:
    return [
        OrderPlaced(
            order_id=f"order-{i:08d}",
            customer_id=f"customer-{i % 97}",
            items=ITEMS,
            total_cents=3 * 120 + 250 + 12 * 45,
            placed_at=PLACED_AT,
        )
        for i in range(n)
    ]


# ---------------------------------------------------------------- the no-op handler

router = Router("bench")


@router.handler
async def on_order_placed(event: OrderPlaced) -> None:
    return None


# ---------------------------------------------------------------- helpers


def registry_for(topic: str) -> EventRegistry:
    """``OrderPlaced`` registered on a fresh topic (its declared one is ``shop.orders.v1``)."""
    registry = EventRegistry()
    registry.add(OrderPlaced, topic=topic)
    return registry


def encode(events: list[OrderPlaced], topic: str) -> list[OutgoingRecord]:
    return EventEncoder(registry_for(topic), source=SOURCE).records(events)


def _check_deadline(deadline: float, what: str) -> None:
    if time.perf_counter() > deadline:
        raise TimeoutError(f"{what} did not finish within {ROW_TIMEOUT_S:.0f} s")


# ---------------------------------------------------------------- publisher rows


async def raw_producer(
    bootstrap: str, topic: str, raw: list[tuple[bytes | None, bytes, list[Any]]]
) -> dict[str, Any]:
    """The baseline: a raw AIOKafkaProducer sending pre-serialized records, batched."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, client_id="bench-raw", **PRODUCER_OPTIONS
    )
    await producer.start()
    try:
        send = producer.send
        warm = [await send(topic, value=v, key=k, headers=h) for k, v, h in raw[:WARMUP]]
        await asyncio.gather(*warm)
        with Window() as w:
            futures = []
            for k, v, h in raw:
                futures.append(await send(topic, value=v, key=k, headers=h))
            for f in futures:
                await f
    finally:
        await producer.stop()
    return w.result(len(raw))


async def pub_a(bootstrap: str, topic: str, ctx: dict[str, Any]) -> dict[str, Any]:
    raw = [(r.key, r.value, list(r.headers)) for r in encode(ctx["events"], topic)]
    return await raw_producer(bootstrap, topic, raw)


async def pub_h(bootstrap: str, topic: str, ctx: dict[str, Any]) -> dict[str, Any]:
    events = ctx["events"]
    kind = registry_for(topic).by_type(OrderPlaced)
    assert kind is not None
    static_type, schema = kind.full_name.encode(), kind.dataschema.encode()
    source, now, utc, uuid4 = SOURCE.encode(), dt.datetime.now, dt.UTC, uuid.uuid4
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, client_id="bench-hand", **PRODUCER_OPTIONS
    )
    await producer.start()
    try:
        send = producer.send

        async def send_one(e: OrderPlaced) -> Any:
            stamp = now(utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
            headers = [
                ("ce_specversion", b"1.0"),
                ("ce_id", str(uuid4()).encode()),
                ("ce_source", source),
                ("ce_type", static_type),
                ("ce_time", stamp.encode()),
                ("content-type", b"application/protobuf"),
                ("ce_dataschema", schema),
            ]
            value = e.proto().SerializeToString()
            return await send(topic, value=value, key=e.order_id.encode(), headers=headers)

        await asyncio.gather(*[await send_one(e) for e in events[:WARMUP]])
        with Window() as w:
            futures = []
            for e in events:
                futures.append(await send_one(e))
            for f in futures:
                await f
    finally:
        await producer.stop()
    return w.result(len(events))


async def _with_publisher(
    bootstrap: str,
    topic: str,
    warmup: Callable[[KafkaEventPublisher], Awaitable[None]],
    timed: Callable[[KafkaEventPublisher], Awaitable[int]],
) -> dict[str, Any]:
    publisher = KafkaEventPublisher(bootstrap, registry_for(topic), source=SOURCE)
    async with publisher:
        await warmup(publisher)
        with Window() as w:
            n = await timed(publisher)
    return w.result(n)


async def pub_b(bootstrap: str, topic: str, ctx: dict[str, Any]) -> dict[str, Any]:
    events = ctx["events"]

    async def warmup(p: KafkaEventPublisher) -> None:
        await p.publish_many(events[:WARMUP])

    async def timed(p: KafkaEventPublisher) -> int:
        await p.publish_many(events)
        return len(events)

    return await _with_publisher(bootstrap, topic, warmup, timed)


async def pub_e(bootstrap: str, topic: str, ctx: dict[str, Any]) -> dict[str, Any]:
    events, chunk = ctx["events"], ctx["chunk"]

    async def warmup(p: KafkaEventPublisher) -> None:
        await p.publish_many(events[:WARMUP])

    async def timed(p: KafkaEventPublisher) -> int:
        for i in range(0, len(events), chunk):
            await p.publish_many(events[i : i + chunk])
        return len(events)

    return await _with_publisher(bootstrap, topic, warmup, timed)


async def pub_c(bootstrap: str, topic: str, ctx: dict[str, Any]) -> dict[str, Any]:
    records, chunk = encode(ctx["events"], topic), ctx["chunk"]

    async def warmup(p: KafkaEventPublisher) -> None:
        await p.send_records(records[:WARMUP])

    async def timed(p: KafkaEventPublisher) -> int:
        for i in range(0, len(records), chunk):
            await p.send_records(records[i : i + chunk])
        return len(records)

    return await _with_publisher(bootstrap, topic, warmup, timed)


async def pub_d(bootstrap: str, topic: str, ctx: dict[str, Any]) -> dict[str, Any]:
    records = encode(ctx["events"], topic)

    async def warmup(p: KafkaEventPublisher) -> None:
        await p.send_records(records[:WARMUP])

    async def timed(p: KafkaEventPublisher) -> int:
        await p.send_records(records)
        return len(records)

    return await _with_publisher(bootstrap, topic, warmup, timed)


# ---------------------------------------------------------------- consumer rows


async def con_a(bootstrap: str, topic: str, ctx: dict[str, Any]) -> dict[str, Any]:
    n = ctx["n"]
    parse = orders_pb2.OrderPlaced.FromString
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-raw-{uuid.uuid4().hex[:12]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=10_000,
        heartbeat_interval_ms=3_333,
    )
    started = time.perf_counter()
    await consumer.start()
    deadline = started + ROW_TIMEOUT_S
    count = 0
    w: Window | None = None
    first = 0
    try:
        while count < n:
            _check_deadline(deadline, "raw consumer")
            batch = await consumer.getmany(timeout_ms=500, max_records=MAX_RECORDS)
            offsets: dict[TopicPartition, int] = {}
            for tp, messages in batch.items():
                if not messages:
                    continue
                for m in messages:
                    parse(m.value)
                offsets[tp] = messages[-1].offset + 1
                count += len(messages)
            if offsets:
                await consumer.commit(offsets)
                if w is None:  # the clock starts once the first batch is done
                    w = Window().__enter__()
                    first = count
        assert w is not None
        w.stop()
    finally:
        await consumer.stop()
    return w.result(count - first, total=count, wall_from_start_s=w.t1 - started)


async def con_h(bootstrap: str, topic: str, ctx: dict[str, Any]) -> dict[str, Any]:
    n = ctx["n"]
    group = f"bench-hand-{uuid.uuid4().hex[:12]}"
    parse, from_proto = orders_pb2.OrderPlaced.FromString, OrderPlaced.from_proto
    wanted = registry_for(topic).by_type(OrderPlaced).full_name  # type: ignore[union-attr]
    handler = on_order_placed
    seen: set[str] = set()  # one group: the ids alone, as a hand-written inbox keeps them
    handled = 0
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=10_000,
        heartbeat_interval_ms=3_333,
    )
    started = time.perf_counter()
    await consumer.start()
    deadline = started + ROW_TIMEOUT_S
    count = 0
    w: Window | None = None
    first = 0
    try:
        while count < n:
            _check_deadline(deadline, "hand-written consumer")
            batch = await consumer.getmany(timeout_ms=500, max_records=MAX_RECORDS)
            offsets: dict[TopicPartition, int] = {}
            for tp, messages in batch.items():
                if not messages:
                    continue
                for m in messages:
                    headers = dict(m.headers)
                    if (  # the CloudEvents checks a consumer of the contract must make
                        headers.get("ce_specversion") != b"1.0"
                        or headers.get("content-type", b"application/protobuf")
                        != b"application/protobuf"
                        or not headers.get("ce_source")
                        or not headers.get("ce_time")
                        or headers["ce_type"].decode() != wanted
                    ):
                        continue
                    event_id = headers["ce_id"].decode()
                    if event_id in seen:
                        continue
                    await handler(from_proto(parse(m.value)))
                    seen.add(event_id)
                    handled += 1
                offsets[tp] = messages[-1].offset + 1
                count += len(messages)
            if offsets:
                await consumer.commit(offsets)
                if w is None:
                    w = Window().__enter__()
                    first = count
        assert w is not None
        w.stop()
    finally:
        await consumer.stop()
    assert handled == count, (handled, count)
    return w.result(count - first, total=count, wall_from_start_s=w.t1 - started)


async def con_b(bootstrap: str, topic: str, ctx: dict[str, Any]) -> dict[str, Any]:
    n = ctx["n"]
    group = f"bench-wirebus-{uuid.uuid4().hex[:12]}"
    registry = registry_for(topic)
    app = App(name="bench", routers=[router])
    mediator = app.mediator()
    dead_letters = KafkaEventPublisher(bootstrap, registry, source=SOURCE)
    await dead_letters.start()
    port = KafkaConsumer(bootstrap, group=group, topics=[topic], create_topics=False)
    processor = EventProcessor(
        mediator, registry, group=group, inbox=InMemoryInbox(), dead_letters=dead_letters
    )
    runner = ConsumerRunner(port, processor)
    outcomes = runner.outcomes
    started = time.perf_counter()
    deadline = started + ROW_TIMEOUT_S
    w: Window | None = None
    first = 0
    try:
        await runner.start()
        task = asyncio.create_task(runner.run())
        try:
            while True:
                handled = outcomes.get("handled", 0)
                if handled and w is None:  # the clock starts with the first handled record
                    w = Window().__enter__()
                    first = handled
                if handled >= n:
                    assert w is not None
                    w.stop()
                    break
                if task.done():
                    task.result()
                    raise RuntimeError("the consumer runner stopped early")
                _check_deadline(deadline, "wirebus consumer")
                await asyncio.sleep(POLL_S)
        finally:
            await runner.stop()
            await asyncio.wait_for(task, 30)
    finally:
        await dead_letters.stop()
        await mediator.close()
    if set(outcomes) != {"handled"}:
        raise RuntimeError(f"unexpected outcomes: {outcomes}")
    total = outcomes["handled"]
    return w.result(total - first, total=total, wall_from_start_s=w.t1 - started)


ROW_FUNCS = {
    "pub_a": pub_a,
    "pub_b": pub_b,
    "pub_c": pub_c,
    "pub_d": pub_d,
    "pub_e": pub_e,
    "pub_h": pub_h,
}
ROW_FUNCS |= {"con_a": con_a, "con_b": con_b, "con_h": con_h} | PEER_FUNCS


# ---------------------------------------------------------------- driver


async def delete_topics(bootstrap: str, topics: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(topics)
    finally:
        await admin.close()


async def measure(args: argparse.Namespace, bootstrap: str) -> dict[str, list[dict[str, Any]]]:
    run_id = uuid.uuid4().hex[:8]
    events = make_events(args.n)
    ctx: dict[str, Any] = {"events": events, "n": args.n, "chunk": args.chunk}
    samples: dict[str, list[dict[str, Any]]] = {k: [] for k in [*PUB_ROWS, *CON_ROWS]}
    created: list[str] = []

    async def fresh_topic(name: str) -> str:
        topic = f"wirebus-bench-{run_id}-{name}"
        await ensure_topics(bootstrap, [topic], partitions=PARTITIONS)
        created.append(topic)
        return topic

    try:
        pub = [k for k in PUB_ROWS if k in args.rows]
        con = [k for k in CON_ROWS if k in args.rows]
        for rnd in range(args.rounds):
            order = pub[rnd % len(pub) :] + pub[: rnd % len(pub)] if pub else []
            for key in order:
                topic = await fresh_topic(f"{key}-{rnd}")
                gc.collect()
                r = await ROW_FUNCS[key](bootstrap, topic, ctx)
                samples[key].append(r)
                _progress(key, rnd, r)
        if con:
            # One pre-filled topic; every consumer row reads it all with a fresh group.
            topic = await fresh_topic("consume")
            async with KafkaEventPublisher(bootstrap, registry_for(topic), source=SOURCE) as p:
                await p.send_records(encode(events, topic))
            for rnd in range(args.rounds):
                order = con[rnd % len(con) :] + con[: rnd % len(con)]
                for key in order:
                    gc.collect()
                    r = await ROW_FUNCS[key](bootstrap, topic, ctx)
                    samples[key].append(r)
                    _progress(key, rnd, r)
    finally:
        if created and not args.keep_topics:
            try:
                await delete_topics(bootstrap, created)
            except Exception as exc:  # best effort: the numbers are already in
                print(f"could not delete the bench topics: {exc}", file=sys.stderr)
    return samples


def _progress(key: str, rnd: int, r: dict[str, Any]) -> None:
    print(
        f"  round {rnd + 1} {key}: {r['events_per_s']:10,.0f} events/s"
        f"  {r['cpu_us_per_event']:6.1f} µs CPU/event  ({r['events']} events, {r['seconds']:.2f} s)",
        file=sys.stderr,
        flush=True,
    )


def summarize(samples: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    labels = PUB_ROWS | CON_ROWS
    for key, runs in samples.items():
        if not runs:
            continue
        rates = sorted(r["events_per_s"] for r in runs)
        row = {
            "key": key,
            "label": labels[key],
            "events_per_s": statistics.median(rates),
            "events_per_s_min": rates[0],
            "events_per_s_max": rates[-1],
            "cpu_us_per_event": statistics.median(r["cpu_us_per_event"] for r in runs),
            "events": runs[0]["events"],
            "rounds": len(runs),
            "runs": runs,
        }
        if "wall_from_start_s" in runs[0]:
            row["wall_from_start_s"] = statistics.median(r["wall_from_start_s"] for r in runs)
        rows.append(row)
    base = {"pub": "pub_a", "con": "con_a"}
    by = {r["key"]: r for r in rows}
    for r in rows:
        b = by.get(base[r["key"][:3]])
        r["ratio"] = r["events_per_s"] / b["events_per_s"] if b else None
        r["cpu_ratio"] = r["cpu_us_per_event"] / b["cpu_us_per_event"] if b else None
        r["ratio_to"] = base[r["key"][:3]]
    return rows


def profile(args: argparse.Namespace, bootstrap: str, key: str) -> None:
    """Run one row once under cProfile and print where its time goes."""

    async def go() -> None:
        events = make_events(args.n)
        ctx = {"events": events, "n": args.n, "chunk": args.chunk}
        topic = f"wirebus-bench-{uuid.uuid4().hex[:8]}-profile-{key}"
        await ensure_topics(bootstrap, [topic], partitions=PARTITIONS)
        try:
            if key.startswith("con"):
                async with KafkaEventPublisher(bootstrap, registry_for(topic), source=SOURCE) as p:
                    await p.send_records(encode(events, topic))
            prof = cProfile.Profile()
            prof.enable()
            r = await ROW_FUNCS[key](bootstrap, topic, ctx)
            prof.disable()
        finally:
            if not args.keep_topics:
                await delete_topics(bootstrap, [topic])
        _progress(key, 0, r)
        out = io.StringIO()
        stats = pstats.Stats(prof, stream=out)
        stats.sort_stats("tottime").print_stats(30)
        stats.sort_stats("cumulative").print_stats(40)
        print(out.getvalue())

    run_loop(go(), args.loop)


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5,000 events per row")
    ap.add_argument("--n", type=int, default=None, help="events per row (default 50,000)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds per row (default 3)")
    ap.add_argument("--chunk", type=int, default=500, help="events per publish_many call")
    ap.add_argument("--rows", default=",".join([*PUB_ROWS, *CON_ROWS]), help="subset to run")
    ap.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    ap.add_argument("--keep-topics", action="store_true", help="do not delete the bench topics")
    ap.add_argument("--profile", choices=list(ROW_FUNCS), help="run one row under cProfile")
    ap.add_argument("--json", default=None, help="write results here")
    args = ap.parse_args(argv)
    bootstrap = os.environ.get(ENV)
    if not bootstrap:
        print(f"{ENV} is not set: no Kafka broker to measure against, nothing run")
        return None
    args.n = args.n or (5_000 if args.quick else 50_000)
    args.rounds = args.rounds or 3
    args.rows = [r for r in args.rows.split(",") if r]
    unknown = set(args.rows) - set(ROW_FUNCS)
    if unknown:
        ap.error(f"unknown row(s): {', '.join(sorted(unknown))}")
    if args.n < WARMUP or args.chunk < 1 or args.rounds < 1:
        ap.error(f"--n must be >= {WARMUP}, --chunk and --rounds >= 1")
    print(machine_info(), file=sys.stderr)
    if args.profile:
        profile(args, bootstrap, args.profile)
        return None

    rows = summarize(run_loop(measure(args, bootstrap), args.loop))
    by = {r["key"]: r for r in rows}
    ratios: dict[str, float] = {}
    for key in ("pub_b", "pub_c", "pub_d", "pub_e", "pub_h"):
        if key in by and by[key]["ratio"] is not None:
            ratios[f"{key}_over_pub_a"] = by[key]["ratio"]
    for key in ("con_b", "con_h", "con_g", "con_f", "con_fd"):
        if key in by and by[key]["ratio"] is not None:
            ratios[f"{key}_over_con_a"] = by[key]["ratio"]
    for key in ("con_b", "con_g"):
        if key in by and "con_f" in by:
            ratios[f"{key}_over_con_f"] = by[key]["events_per_s"] / by["con_f"]["events_per_s"]
    if "pub_b" in by and "pub_h" in by:
        ratios["pub_b_over_pub_h"] = by["pub_b"]["events_per_s"] / by["pub_h"]["events_per_s"]
    if "con_b" in by and "con_h" in by:
        ratios["con_b_over_con_h"] = by["con_b"]["events_per_s"] / by["con_h"]["events_per_s"]

    title = (
        f"kafka_throughput ({args.loop} loop, {args.n:,} events/row, chunk {args.chunk},"
        f" median of {args.rounds} round(s), broker {bootstrap})"
    )
    print_table(
        title,
        ["row", "what", "events/s", "min", "max", "x baseline", "CPU µs/event", "x baseline CPU"],
        [
            [
                r["key"],
                r["label"],
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
    targets = [
        ("pub_b_over_pub_a", "wirebus publish_many / raw producer (b / a)", 0.9),
        ("pub_c_over_pub_a", "wirebus send_records chunked / raw (c / a)", None),
        ("pub_d_over_pub_a", "wirebus send_records one call / raw (d / a)", None),
        ("pub_e_over_pub_a", "wirebus publish_many chunked / raw (e / a)", None),
        ("pub_h_over_pub_a", "hand-encoding producer / raw (h / a)", None),
        ("pub_b_over_pub_h", "wirebus publish_many / hand-encoding producer (b / h)", None),
        ("con_b_over_con_a", "wirebus consumer / raw consumer (b / a)", 0.8),
        ("con_h_over_con_a", "hand-written equivalent consumer / raw (h / a)", None),
        ("con_b_over_con_h", "wirebus consumer / hand-written equivalent (b / h)", 0.8),
        ("con_g_over_con_a", "wirebus generated-class handler / raw loop (g / a)", 0.8),
        ("con_f_over_con_a", "FastStream subscriber / raw consumer (f / a)", None),
        ("con_fd_over_con_a", "FastStream as documented / raw consumer (fd / a)", None),
        ("con_b_over_con_f", "wirebus dataclass handler / FastStream (b / f)", 3.0),
        ("con_g_over_con_f", "wirebus generated-class handler / FastStream (g / f)", 3.0),
    ]
    print_table(
        "kafka_throughput: ratios and targets",
        ["measure", "value", "target"],
        [
            [
                label,
                ratios[key],
                "-"
                if target is None
                else f"{'met' if ratios[key] >= target else 'MISSED'} (>= {target})",
            ]
            for key, label, target in targets
            if key in ratios
        ],
    )
    result = {
        "bench": "kafka_throughput",
        "loop": args.loop,
        "n": args.n,
        "chunk": args.chunk,
        "rounds": args.rounds,
        "rows": rows,
        "ratios": ratios,
    }
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
