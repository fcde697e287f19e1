"""Consumer catching up a backlog: ``wirebus consume`` of the shop's payments slice on PostgreSQL.

Needs Kafka (``WIREBUS_KAFKA_BOOTSTRAP``) and PostgreSQL (``WIREBUS_DATABASE_URL``,
``postgresql+asyncpg://``; the role may CREATE DATABASE).

Once per run, N ``CapturePayment`` records (a distinct ``order_id`` each, under
the payment limit, wirebus-encoded; ``backlog_noop_app.capture_payments``) are
appended to the shop's topic ``shop.payments.v1``; the
per-partition end offsets before and after are the backlog. Each row then runs,
as its own process, exactly what an operator runs::

    python -m wirebus consume <target> --group <fresh> --log-level warning

(``--log-level info`` instead: the shop's ``log_with_correlation_id`` behaviour
then writes its INFO line per event to the row's log; at ``warning`` the
behaviour still runs, correlation id and timing included, but emits nothing.)

with ``WIREBUS_DATABASE_URL`` = a fresh database (``wirebus_backlog_<hex>``,
dropped afterwards) and the fresh group's offsets committed at the backlog's
start beforehand (so records other runs left on the shared topic are not read):

  payments  ``examples.shop.app:app --slice payments``: ``capture_payment`` returns a
            ``PaymentCaptured`` per ``CapturePayment``, written to the outbox in the
            consumer's transaction (with the inbox mark) and published by the
            in-process relay (``--relay``, the default) to ``shop.payments.v1``
  noop      ``backlog_noop_app:app`` (``--app-dir bench``): a no-op handler of the
            same ``CapturePayment``, same database settings: the unit of work and the
            inbox mark, no outbox row

Until the checkout saga (wave 13) the payments slice answered ``OrderPlaced``
on ``shop.orders.v1``, and this backlog was of ``OrderPlaced``: the work per
record (one event through the outbox) is the same; the record is smaller (no
items). The slice publishes its ``PaymentCaptured`` to the topic it reads:
the row runs with ``--skip-unknown`` so the consumer skips them (without it,
it dead-letters each), and they are not counted (the backlog's end offsets
are taken before the row starts).

This script polls the group's committed offsets (``list_consumer_group_offsets``,
every 0.05 s) until the lag over the backlog is zero, or ``--timeout`` seconds
(then the row is reported as timed out, with what it drained). Reported per row:
records/s from the first commit to the last (steady state; the start-up and group
join are left out), the drain time from the process start (and records/s over it), and the consumer
process's CPU per record (``/proc``) over the same window. After the row, the
outbox's pending/failed counts are read from its database (payments: the relay
must have published every PaymentCaptured). Nothing is asserted.

Run: ``PYTHONPATH=gen/python:. .venv/bin/python bench/consumer_backlog.py [--quick] [--json out.json]``
(default N 20,000; ``--quick`` 3,000).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import (  # noqa: E402
    code_env,
    code_root,
    machine_info,
    print_table,
    proc_cpu_seconds,
    run_loop,
    write_json,
)

KAFKA_ENV = "WIREBUS_KAFKA_BOOTSTRAP"
DB_ENV = "WIREBUS_DATABASE_URL"
TOPIC = "shop.payments.v1"
POLL_S = 0.05
ROWS: dict[str, tuple[list[str], str]] = {
    "payments": (
        # --skip-unknown: the slice reads the topic its PaymentCaptured go to, and
        # would dead-letter each (not its type) -- work the OrderPlaced backlog had not
        ["examples.shop.app:app", "--slice", "payments", "--skip-unknown"],
        "wirebus consume --slice payments (CapturePayment -> PaymentCaptured via the outbox)",
    ),
    "noop": (
        ["backlog_noop_app:app", "--app-dir", str(HERE)],
        "wirebus consume, no-op handler (inbox + transaction, no outbox row)",
    ),
}

Offsets = dict[Any, int]


async def end_offsets(bootstrap: str) -> Offsets:
    """The end offset of every partition of ``TOPIC`` now."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(TOPIC, bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()  # subscribed without a group: the topic's metadata is fetched
    try:
        parts: set[int] = set()
        for _ in range(50):
            parts = consumer.partitions_for_topic(TOPIC) or set()
            if parts:
                break
            await asyncio.sleep(0.1)
        if not parts:
            raise RuntimeError(f"no partitions for {TOPIC}")
        tps = [TopicPartition(TOPIC, p) for p in sorted(parts)]
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def fill_backlog(bootstrap: str, n: int) -> tuple[Offsets, Offsets]:
    """Append ``n`` CapturePayment records to ``TOPIC``: the offsets before and after."""
    from backlog_noop_app import capture_payments

    from wirebus.broker import EventEncoder
    from wirebus.kafka import KafkaEventPublisher, ensure_topics

    await ensure_topics(bootstrap, [TOPIC], partitions=3)
    start = await end_offsets(bootstrap)
    registry = _registry()
    # a fresh ce_id per record: no inbox duplicate
    records = EventEncoder(registry, source="bench").records(capture_payments(n))
    async with KafkaEventPublisher(bootstrap, registry, source="bench") as publisher:
        await publisher.send_records(records)
    return start, await end_offsets(bootstrap)


def _registry() -> Any:
    from examples.shop.payments.messages import CapturePayment
    from wirebus.codec import EventRegistry

    registry = EventRegistry()
    registry.add(CapturePayment, topic=TOPIC)
    return registry


async def commit_start(bootstrap: str, group: str, start: Offsets) -> None:
    """Commit ``start`` for ``group`` (a fresh group then reads only the backlog)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        consumer.assign(list(start))
        await consumer.commit(dict(start))
    finally:
        await consumer.stop()


async def committed(admin: Any, group: str, end: Offsets) -> int:
    """Records of the backlog the group has committed (its offsets, capped at ``end``)."""
    offsets = await admin.list_consumer_group_offsets(group)
    return sum(min(m.offset, end[tp]) for tp, m in offsets.items() if tp in end and m.offset >= 0)


async def run_row(
    args: argparse.Namespace, bootstrap: str, url: str, key: str, span: tuple[Offsets, Offsets]
) -> dict[str, Any]:
    """One ``wirebus consume`` process draining the backlog with a fresh group and database."""
    from aiokafka.admin import AIOKafkaAdminClient
    from relay_throughput import fresh_database

    start, end = span
    group = f"bench-backlog-{key}-{uuid.uuid4().hex[:10]}"
    await commit_start(bootstrap, group, start)
    base, total = sum(start.values()), sum(end[tp] - start[tp] for tp in end)
    target, _ = ROWS[key]
    async with fresh_database(url, prefix="wirebus_backlog") as db_url:
        log_path = Path(args.log_dir) / f"consume-{key}-{group}.log"
        with open(log_path, "wb") as log:
            spawned = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, "-m", "wirebus", "consume", *target,
                 "--group", group, "--log-level", args.log_level],
                cwd=code_root(), env=code_env({DB_ENV: db_url, KAFKA_ENV: bootstrap}),
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
            await admin.start()
            try:
                r = await _watch(args, proc, admin, group, end, base, total, spawned)
            finally:
                await admin.close()
                _stop(proc)
        r["outbox_pending_after"], r["outbox_failed_after"] = await _outbox(db_url)
    r["log_tail"] = log_path.read_text(errors="replace").splitlines()[-5:]
    return {"key": key, "group": group, "backlog": total, **r}


async def _watch(
    args: argparse.Namespace, proc: subprocess.Popen[bytes], admin: Any, group: str,
    end: Offsets, base: int, total: int, spawned: float,
) -> dict[str, Any]:  # fmt: skip
    """Poll the group's commits until the backlog is drained (or the time limit)."""
    first: tuple[float, int, float] | None = None  # (time, records done, cpu)
    done, now, timed_out = 0, spawned, False
    while True:
        now = time.perf_counter()
        done = await committed(admin, group, end) - base
        if done > 0 and first is None:
            first = (now, done, proc_cpu_seconds(proc.pid))
        if done >= total:
            break
        if proc.poll() is not None:
            raise RuntimeError(f"wirebus consume exited with status {proc.returncode}")
        if now - spawned > args.timeout:
            timed_out = True
            break
        await asyncio.sleep(POLL_S)
    cpu = proc_cpu_seconds(proc.pid)
    whole = {"records": done, "drain_s": now - spawned, "timed_out": timed_out,
             "records_per_s_from_start": done / (now - spawned)}  # fmt: skip
    if first is None or done <= first[1]:  # drained within one poll: no steady-state window
        return whole | {"records_per_s": float("nan"), "cpu_us_per_record": float("nan")}
    steady = done - first[1]
    return whole | {
        "records_per_s": steady / (now - first[0]),
        "first_commit_s": first[0] - spawned,
        "cpu_us_per_record": (cpu - first[2]) / steady * 1e6,
    }


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _outbox(db_url: str) -> tuple[int, int]:
    """Pending and failed outbox rows left in the row's database."""
    from wirebus.db import Database
    from wirebus.outbox.relay import outbox_stats

    database = Database(db_url)
    try:
        stats = await outbox_stats(database)
    finally:
        await database.close()
    return stats.pending, stats.failed


async def measure(args: argparse.Namespace, bootstrap: str, url: str) -> list[dict[str, Any]]:
    span = await fill_backlog(bootstrap, args.n)
    runs: list[dict[str, Any]] = []
    for rnd in range(args.rounds):
        order = args.rows[rnd % len(args.rows) :] + args.rows[: rnd % len(args.rows)]
        for key in order:
            r = await run_row(args, bootstrap, url, key, span)
            r["round"] = rnd + 1
            runs.append(r)
            print(
                f"  round {rnd + 1} {key}: {r['records_per_s']:9,.0f} records/s, drained"
                f" {r['records']:,}/{r['backlog']:,} in {r['drain_s']:.1f} s"
                f"{' (TIME LIMIT)' if r['timed_out'] else ''}",
                file=sys.stderr,
                flush=True,
            )
    return runs


def summarize(runs: list[dict[str, Any]], rows: list[str]) -> list[dict[str, Any]]:
    out = []
    for key in rows:
        mine = [r for r in runs if r["key"] == key]
        out.append(
            {
                "key": key,
                "label": ROWS[key][1],
                "records_per_s": statistics.median(r["records_per_s"] for r in mine),
                "drain_s": statistics.median(r["drain_s"] for r in mine),
                "records_per_s_from_start": statistics.median(
                    r["records_per_s_from_start"] for r in mine
                ),
                "cpu_us_per_record": statistics.median(r["cpu_us_per_record"] for r in mine),
                "backlog": mine[0]["backlog"],
                "drained": min(r["records"] for r in mine),
                "timed_out": any(r["timed_out"] for r in mine),
                "outbox_pending_after": max(r["outbox_pending_after"] for r in mine),
                "outbox_failed_after": max(r["outbox_failed_after"] for r in mine),
                "rounds": len(mine),
                "runs": mine,
            }
        )
    by = {r["key"]: r for r in out}
    for r in out:
        noop = by.get("noop")
        r["ratio_to_noop"] = r["records_per_s"] / noop["records_per_s"] if noop else None
    return out


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3,000 records")
    ap.add_argument("--n", type=int, default=None, help="backlog records (default 20,000)")
    ap.add_argument("--rounds", type=int, default=1, help="rounds of every row (default 1)")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"subset of {','.join(ROWS)}")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per row (n/100 + 60)")
    ap.add_argument("--log-dir", default=None, help="keep the consumers' logs here")
    ap.add_argument(
        "--log-level",
        default="warning",
        help="the consumers' --log-level (default warning; info: the shop logs a line per event)",
    )
    ap.add_argument("--json", default=None, help="write results here")
    args = ap.parse_args(argv)
    bootstrap, url = os.environ.get(KAFKA_ENV), os.environ.get(DB_ENV, "")
    if not bootstrap or not url.startswith("postgresql"):
        print(f"consumer_backlog: skipped, needs {KAFKA_ENV} and a postgresql {DB_ENV}")
        return None
    args.n = args.n or (3_000 if args.quick else 20_000)
    args.timeout = args.timeout or args.n / 100 + 60
    args.rows = [r for r in args.rows.split(",") if r]
    if set(args.rows) - set(ROWS) or args.n < 1 or args.rounds < 1:
        ap.error(f"--rows from {','.join(ROWS)}; --n and --rounds >= 1")
    args.log_dir = args.log_dir or tempfile.mkdtemp(prefix="wirebus-backlog-")
    print(f"consumer logs in {args.log_dir}", file=sys.stderr)
    print(machine_info(), file=sys.stderr)
    rows = summarize(run_loop(measure(args, bootstrap, url)), args.rows)
    print_table(
        f"consumer_backlog ({args.n:,} CapturePayment on {TOPIC}, fresh group and PostgreSQL"
        f" database per row, --log-level {args.log_level}, median of {args.rounds} round(s))",
        ["row", "what", "records/s", "x noop", "drain s (from start)", "CPU µs/record",
         "drained", "outbox pending/failed after"],
        [[r["key"], r["label"], r["records_per_s"], r["ratio_to_noop"], r["drain_s"],
          r["cpu_us_per_record"],
          f"{r['drained']:,}/{r['backlog']:,}{' TIME LIMIT' if r['timed_out'] else ''}",
          f"{r['outbox_pending_after']}/{r['outbox_failed_after']}"] for r in rows],
    )  # fmt: skip
    result = {
        "bench": "consumer_backlog",
        "n": args.n,
        "rounds": args.rounds,
        "log_level": args.log_level,
        "rows": rows,
    }
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
