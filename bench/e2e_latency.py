"""End-to-end latency: PlaceOrder returned -> OrderPlaced readable on Kafka, through the outbox.

Needs Kafka (``WIREBUS_KAFKA_BOOTSTRAP``) and PostgreSQL (``WIREBUS_DATABASE_URL``,
``postgresql+asyncpg://``; the role may CREATE DATABASE). A fresh database
``wirebus_e2e_<hex>`` is created for the run and dropped at the end.

Three processes (all on 127.0.0.1):

* **server**: ``python -m wirebus serve examples.shop.app:app --log-level warning``
  (``PYTHONPATH=gen/python:.``, the fresh database, Kafka). With Kafka, ``serve``
  only serves the gateway and runs the relay in-process (no consumers): each
  PlaceOrder writes a ``shop_orders`` row and an outbox row in one transaction
  and NOTIFYs the relay, which claims, publishes to ``shop.orders.v1`` and deletes.
  ``--log-level warning`` silences the shop's per-request info log line.
* **client** (this script with ``--client``, a subprocess): open-loop PlaceOrder
  (2 items) at ``--rate`` (500/s) for ``--seconds`` (20; ``--quick`` 5) after a
  1 s warm-up at the same rate; call *i* is started at ``t0 + i / rate`` whatever
  the earlier calls do (at most 2,000 in flight; 10 s deadline per call); records
  the ``order_id`` returned and ``time.monotonic()`` when each call returned.
* **consumer** (this process): aiokafka, no group, all partitions of
  ``shop.orders.v1`` assigned and positioned at the end before the client starts;
  records ``time.monotonic()`` when each record is returned by ``getmany`` and
  keeps only the order ids the client placed (the topic is the shop's, fixed).

``time.monotonic()`` is CLOCK_MONOTONIC, the same clock in every process of the
machine. Reported: p50/p99/max of (arrival - call returned) in ms over the
measured (non-warm-up) calls, the achieved command rate (successful measured
calls / measured window), call latency, and events missing 15 s after the last
call returned. Nothing is asserted.

Run: ``PYTHONPATH=gen/python:. .venv/bin/python bench/e2e_latency.py [--quick] [--json out.json]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import (  # noqa: E402
    code_env,
    code_root,
    machine_info,
    percentile,
    print_table,
    run_loop,
    write_json,
)

KAFKA_ENV = "WIREBUS_KAFKA_BOOTSTRAP"
DB_ENV = "WIREBUS_DATABASE_URL"
TOPIC = "shop.orders.v1"
WARMUP_S = 1.0
MAX_IN_FLIGHT = 2_000
CALL_DEADLINE_S = 10.0
DRAIN_S = 15.0  # how long the consumer waits for stragglers after the last call
READY_TIMEOUT_S = 60.0


# ---------------------------------------------------------------- client (subprocess)


async def client(address: str, rate: float, seconds: float, out: str) -> None:
    import grpc.aio
    from shop.orders.v1 import orders_pb2, orders_pb2_grpc

    request = orders_pb2.PlaceOrderRequest(
        customer_id="bench",
        items=[
            orders_pb2.LineItem(sku="book", quantity=2, price_cents=1250),
            orders_pb2.LineItem(sku="pen", quantity=1, price_cents=199),
        ],
    )
    results: list[list[Any]] = []  # [order_id | None, warm-up?, scheduled, returned, error]
    async with grpc.aio.insecure_channel(address) as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        await channel.channel_ready()
        limit = asyncio.Semaphore(MAX_IN_FLIGHT)

        async def one(scheduled: float, warm: bool) -> None:
            async with limit:
                try:
                    reply = await stub.PlaceOrder(request, timeout=CALL_DEADLINE_S)
                except grpc.aio.AioRpcError as err:
                    results.append([None, warm, scheduled, time.monotonic(), err.code().name])
                    return
                results.append([reply.order_id, warm, scheduled, time.monotonic(), None])

        total = int((WARMUP_S + seconds) * rate)
        warm_n = int(WARMUP_S * rate)
        t0 = time.monotonic() + 0.05
        tasks = []
        for i in range(total):
            scheduled = t0 + i / rate
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(scheduled, i < warm_n)))
        await asyncio.gather(*tasks)
    Path(out).write_text(json.dumps({"results": results, "t0": t0, "warm_n": warm_n}))


# ---------------------------------------------------------------- orchestration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_ready(address: str, server: subprocess.Popen[bytes]) -> None:
    import grpc.aio
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with status {server.returncode}")
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                status = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if status.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the server was not ready within {READY_TIMEOUT_S} s")
        await asyncio.sleep(0.2)


async def measure(args: argparse.Namespace, bootstrap: str, url: str) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer
    from relay_throughput import fresh_database

    from wirebus.db import Database
    from wirebus.kafka import ensure_topics
    from wirebus.outbox.relay import outbox_stats

    await ensure_topics(bootstrap, [TOPIC], partitions=3)
    tmp = tempfile.mkdtemp(prefix="wirebus-e2e-")
    async with fresh_database(url, prefix="wirebus_e2e") as db_url:
        port = _free_port()
        address = f"127.0.0.1:{port}"
        log_path = Path(tmp) / "server.log"
        log = open(log_path, "wb")  # noqa: SIM115
        server = subprocess.Popen(
            [sys.executable, "-m", "wirebus", "serve", "examples.shop.app:app",
             "--port", str(port), "--log-level", "warning"],
            cwd=code_root(), env=code_env({DB_ENV: db_url, KAFKA_ENV: bootstrap}),
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
        )
        try:
            await _wait_ready(address, server)
            await consumer.start()
            partitions = [tp for tp in (await _partitions(consumer, TOPIC))]
            consumer.assign(partitions)
            await consumer.seek_to_end(*partitions)
            for tp in partitions:  # resolve the end offsets now, before any command
                await consumer.position(tp)
            arrivals: dict[str, float] = {}
            stop = asyncio.Event()

            async def consume() -> None:
                while not stop.is_set():
                    batch = await consumer.getmany(timeout_ms=100, max_records=1000)
                    now = time.monotonic()
                    for messages in batch.values():
                        for m in messages:
                            if m.key is not None:
                                arrivals.setdefault(m.key.decode(), now)

            task = asyncio.create_task(consume())
            out = Path(tmp) / "client.json"
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(Path(__file__).resolve()), "--client", address,
                "--rate", str(args.rate), "--seconds", str(args.seconds), "--out", str(out),
                cwd=code_root(), env=code_env({}),
            )  # fmt: skip
            budget = WARMUP_S + args.seconds + CALL_DEADLINE_S + 60
            rc = await asyncio.wait_for(proc.wait(), budget)
            if rc != 0:
                raise RuntimeError(f"the client exited with status {rc}")
            data = json.loads(out.read_text())
            wanted = {r[0] for r in data["results"] if r[0] is not None and not r[1]}
            deadline = time.monotonic() + DRAIN_S
            while time.monotonic() < deadline and not wanted <= arrivals.keys():
                if task.done():
                    task.result()
                await asyncio.sleep(0.05)
            stop.set()
            await task
            database = Database(db_url)
            try:
                stats = await outbox_stats(database)
            finally:
                await database.close()
        finally:
            await consumer.stop()
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            log.close()
    return analyse(args, data, arrivals, stats, log_path)


async def _partitions(consumer: Any, topic: str) -> list[Any]:
    from aiokafka import TopicPartition

    for _ in range(50):
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return [TopicPartition(topic, p) for p in sorted(parts)]
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)
    raise RuntimeError(f"no partitions for {topic}")


def analyse(
    args: argparse.Namespace,
    data: dict[str, Any],
    arrivals: dict[str, float],
    stats: Any,
    log_path: Path,
) -> dict[str, Any]:
    measured = [r for r in data["results"] if not r[1]]
    ok = [r for r in measured if r[0] is not None]
    errors: dict[str, int] = {}
    for r in measured:
        if r[4] is not None:
            errors[r[4]] = errors.get(r[4], 0) + 1
    first_sched = min(r[2] for r in measured)
    last_ret = max(r[3] for r in measured)
    window = last_ret - first_sched
    e2e = sorted((arrivals[r[0]] - r[3]) * 1000 for r in ok if r[0] in arrivals)
    call = sorted((r[3] - r[2]) * 1000 for r in ok)
    missing = [r[0] for r in ok if r[0] not in arrivals]
    return {
        "bench": "e2e_latency",
        "rate_target": args.rate,
        "seconds": args.seconds,
        "commands": len(measured),
        "ok": len(ok),
        "errors": errors,
        "achieved_rate": len(ok) / window,
        "window_s": window,
        "e2e_ms": {
            "p50": percentile(e2e, 50),
            "p99": percentile(e2e, 99),
            "max": e2e[-1] if e2e else float("nan"),
            "min": e2e[0] if e2e else float("nan"),
        },
        "call_ms": {
            "p50": percentile(call, 50),
            "p99": percentile(call, 99),
            "max": call[-1] if call else float("nan"),
        },
        "events_seen": len(e2e),
        "missing": len(missing),
        "outbox_pending_after": stats.pending,
        "outbox_failed_after": stats.failed,
        "server_log_tail": log_path.read_text(errors="replace").splitlines()[-5:],
    }


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 s instead of 20 s")
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--rate", type=float, default=500.0, help="PlaceOrder calls per second")
    ap.add_argument("--json", default=None, help="write results here")
    ap.add_argument("--client", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.seconds = args.seconds or (5.0 if args.quick else 20.0)
    if args.client:
        run_loop(client(args.client, args.rate, args.seconds, args.out))
        return None
    bootstrap = os.environ.get(KAFKA_ENV)
    url = os.environ.get(DB_ENV, "")
    if not bootstrap or not url.startswith("postgresql"):
        print(f"e2e_latency: skipped, needs {KAFKA_ENV} and a postgresql {DB_ENV}")
        return None
    print(machine_info(), file=sys.stderr)
    r = run_loop(measure(args, bootstrap, url))
    e, c = r["e2e_ms"], r["call_ms"]
    print_table(
        f"e2e_latency (PlaceOrder at {args.rate:.0f}/s for {args.seconds:.0f} s, wirebus serve"
        " + in-process relay, PostgreSQL, Kafka)",
        ["measure", "value"],
        [
            ["commands sent (measured)", r["commands"]],
            ["commands ok", r["ok"]],
            ["errors", json.dumps(r["errors"]) if r["errors"] else "0"],
            ["achieved command rate (/s)", r["achieved_rate"]],
            [
                "call latency p50 / p99 / max (ms)",
                f"{c['p50']:.1f} / {c['p99']:.1f} / {c['max']:.1f}",
            ],
            ["e2e returned->on Kafka p50 (ms)", e["p50"]],
            ["e2e p99 (ms)", e["p99"]],
            ["e2e max (ms)", e["max"]],
            ["events seen / missing", f"{r['events_seen']} / {r['missing']}"],
            [
                "outbox pending / failed after",
                f"{r['outbox_pending_after']} / {r['outbox_failed_after']}",
            ],
        ],
    )
    write_json(args.json, r)
    return r


if __name__ == "__main__":
    main()
