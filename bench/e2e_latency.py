"""End-to-end latency: PlaceOrder returned -> OrderPlaced readable on Kafka, through the outbox.

Needs Kafka (``WIREBUS_KAFKA_BOOTSTRAP``) and PostgreSQL (``WIREBUS_DATABASE_URL``,
``postgresql+asyncpg://``; the role may CREATE DATABASE). A fresh database
``wirebus_e2e_<hex>`` is created for the run and dropped at the end.

Three processes (all on 127.0.0.1):

* **server**: ``python -m wirebus serve <app> --log-level warning``
  (``PYTHONPATH=gen/python:.``, the fresh database, Kafka). With Kafka, ``serve``
  only serves the gateway and runs the relay in-process (no consumers).
  ``--app place-order`` (the default): ``e2e_place_order_app:app`` (``bench/``),
  the shop's PlaceOrder as earlier rounds measured it -- each call writes a
  ``shop_orders`` row and one outbox row in one transaction and NOTIFYs the
  relay, which claims, publishes to ``shop.orders.v1`` and deletes.
  ``--app shop``: ``examples.shop.app:app`` as it is since wave 13, whose
  PlaceOrder also emits ``OrderStatusChanged`` and ``OrderSnapshot``: 3 outbox
  rows and 3 Kafka records per call (the latency is still that of the
  ``OrderPlaced`` record). ``--log-level warning`` silences the shop's
  per-request info log line.
* **client** (this script with ``--client``, a subprocess, one per step): open-loop
  PlaceOrder (2 items) at each rate of ``--rates`` in turn (300, 500, 700, 1000,
  1200/s; ``--rate R`` for one step) for ``--seconds`` (20; ``--quick`` 5) after a
  1 s warm-up at the same rate; call *i* is started at ``t0 + i / rate`` whatever
  the earlier calls do (at most 2,000 in flight; 10 s deadline per call); records
  the ``order_id`` returned and ``time.monotonic()`` when each call returned.
* **consumer** (this process): aiokafka, no group, all partitions of
  ``shop.orders.v1`` assigned and positioned at the end before the client starts;
  records ``time.monotonic()`` when each record is returned by ``getmany`` and
  keeps only the order ids the client placed (the topic is the shop's, fixed).

``time.monotonic()`` is CLOCK_MONOTONIC, the same clock in every process of the
machine. Reported per rate: p50/p99/max of (arrival - call returned) in ms over
the measured (non-warm-up) calls, the achieved command rate (successful measured
calls / measured window), ok / errors, call latency, events missing 15 s after
the last call returned, and the server process's CPU (``/proc``) per successful
command and in cores over the step. The server, its database and the consumer
stay up from one rate to the next (each step waits for its events first).
Nothing is asserted.

``--profile-rate R`` also samples the server with ``py-spy record`` (see
``_pyspy.py``) over the measured window of the step at R and writes a top-N
breakdown (by area, by function self and inclusive) to ``--profile-out``
(``e2e-profile.md``; the raw collapsed stacks beside it, ``.pyspy.txt``).

Run: ``PYTHONPATH=gen/python:. .venv/bin/python bench/e2e_latency.py [--quick] [--rates 300,500]
[--profile-rate 500] [--json out.json]``
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
    proc_cpu_seconds,
    run_loop,
    write_json,
)

KAFKA_ENV = "WIREBUS_KAFKA_BOOTSTRAP"
DB_ENV = "WIREBUS_DATABASE_URL"
TOPIC = "shop.orders.v1"
APPS: dict[str, tuple[list[str], str]] = {
    "place-order": (
        ["e2e_place_order_app:app", "--app-dir", str(HERE)],
        "the shop's PlaceOrder alone, 1 outbox row per call",
    ),
    "shop": (["examples.shop.app:app"], "the whole shop, 3 outbox rows per PlaceOrder"),
}
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
        print(f"GO {t0}", flush=True)  # the orchestrator may start a profiler from here
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
    """One server and one consumer for the run; one client step per rate, rising."""
    from aiokafka import AIOKafkaConsumer
    from relay_throughput import fresh_database

    from wirebus.kafka import ensure_topics

    await ensure_topics(bootstrap, [TOPIC], partitions=3)
    tmp = Path(tempfile.mkdtemp(prefix="wirebus-e2e-"))
    async with fresh_database(url, prefix="wirebus_e2e") as db_url:
        port = _free_port()
        address = f"127.0.0.1:{port}"
        log_path = tmp / "server.log"
        log = open(log_path, "wb")  # noqa: SIM115
        server = subprocess.Popen(
            [sys.executable, "-m", "wirebus", "serve", *APPS[args.app][0],
             "--port", str(port), "--log-level", "warning"],
            cwd=code_root(), env=code_env({DB_ENV: db_url, KAFKA_ENV: bootstrap}),
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
        )
        task: asyncio.Task[None] | None = None
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
            steps = []
            for rate in args.rates:
                step = Step(args, rate, address, server.pid, tmp)
                steps.append(await step.run(arrivals, task))
                _progress(steps[-1])
            stop.set()
            await task
            pending, failed = await _outbox(db_url)
        finally:
            if task is not None and not task.done():
                task.cancel()
            await consumer.stop()
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            log.close()
    return {
        "bench": "e2e_latency",
        "app": APPS[args.app][1],
        "seconds": args.seconds,
        "steps": steps,
        "outbox_pending_after": pending,
        "outbox_failed_after": failed,
        "server_log_tail": log_path.read_text(errors="replace").splitlines()[-5:],
    }


class Step:
    """One client run at ``rate`` against the running server (profiled if asked)."""

    def __init__(
        self, args: argparse.Namespace, rate: float, address: str, server_pid: int, tmp: Path
    ) -> None:
        self.args, self.rate, self.address, self.pid, self.tmp = (
            args,
            rate,
            address,
            server_pid,
            tmp,
        )
        self.profile = args.profile_rate is not None and abs(args.profile_rate - rate) < 1e-9

    async def run(self, arrivals: dict[str, float], consumer: asyncio.Task[None]) -> dict[str, Any]:
        out = self.tmp / f"client-{self.rate:g}.json"
        cpu0 = proc_cpu_seconds(self.pid)
        t0 = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(Path(__file__).resolve()), "--client", self.address,
            "--rate", str(self.rate), "--seconds", str(self.args.seconds), "--out", str(out),
            cwd=code_root(), env=code_env({}), stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        budget = WARMUP_S + self.args.seconds + CALL_DEADLINE_S + 60
        spy = await self._start_profile(proc) if self.profile else None
        rc = await asyncio.wait_for(proc.wait(), budget)
        cpu, wall = proc_cpu_seconds(self.pid) - cpu0, time.monotonic() - t0
        if rc != 0:
            raise RuntimeError(f"the client exited with status {rc}")
        data = json.loads(out.read_text())
        wanted = {r[0] for r in data["results"] if r[0] is not None and not r[1]}
        deadline = time.monotonic() + DRAIN_S
        while time.monotonic() < deadline and not wanted <= arrivals.keys():
            if consumer.done():
                consumer.result()
            await asyncio.sleep(0.05)
        r = analyse(self.rate, self.args.seconds, data, arrivals)
        all_ok = sum(1 for x in data["results"] if x[0] is not None)
        r["server_cpu_ms_per_ok_call"] = cpu / max(1, all_ok) * 1000
        r["server_cpu_cores"] = cpu / wall
        if spy is not None:
            r["profile"] = self._finish_profile(spy)
        return r

    async def _start_profile(self, proc: asyncio.subprocess.Process) -> Any:
        """Sample the server over the measured window (after the client's warm-up)."""
        from _pyspy import start_record

        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT_S)
        go = float(line.split()[1])  # the client's t0 (CLOCK_MONOTONIC)
        await asyncio.sleep(max(0.0, go + WARMUP_S - time.monotonic()))
        native = self.args.profile_native
        return start_record(
            self.pid, seconds=self.args.seconds, out=self._raw_path(), native=native
        )

    def _raw_path(self) -> Path:
        return Path(self.args.profile_out).with_suffix(".pyspy.txt")

    def _finish_profile(self, spy: Any) -> str:
        from _pyspy import breakdown, finish_record

        text = breakdown(finish_record(spy, self._raw_path()), top=self.args.profile_top)
        md = Path(self.args.profile_out)
        title = f"# wirebus serve CPU at {self.rate:g} PlaceOrder/s ({self.args.seconds:g} s)\n\n"
        if not self.args.profile_native:
            title += (
                "Python frames only (py-spy --nonblocking): a frame's self time includes the C"
                " it calls -- `Runner.run` is the event loop (uvloop), grpc's Cython/C core and"
                " upb; asyncpg's `execute` its Cython protocol. `--profile-native` splits them"
                " (and pauses the server for each sample).\n\n"
            )
        md.write_text(title + text + "\n")
        print(f"\n{title}{text}", flush=True)
        return str(md)


async def _outbox(db_url: str) -> tuple[int, int]:
    from wirebus.db import Database
    from wirebus.outbox.relay import outbox_stats

    database = Database(db_url)
    try:
        stats = await outbox_stats(database)
    finally:
        await database.close()
    return stats.pending, stats.failed


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
    rate: float, seconds: float, data: dict[str, Any], arrivals: dict[str, float]
) -> dict[str, Any]:
    """One step's figures from the client's results and the consumer's arrival times."""
    measured = [r for r in data["results"] if not r[1]]
    ok = [r for r in measured if r[0] is not None]
    errors: dict[str, int] = {}
    for r in measured:
        if r[4] is not None:
            errors[r[4]] = errors.get(r[4], 0) + 1
    window = max(r[3] for r in measured) - min(r[2] for r in measured)
    e2e = sorted((arrivals[r[0]] - r[3]) * 1000 for r in ok if r[0] in arrivals)
    call = sorted((r[3] - r[2]) * 1000 for r in ok)
    return {
        "rate_target": rate,
        "seconds": seconds,
        "commands": len(measured),
        "ok": len(ok),
        "errors": errors,
        "achieved_rate": len(ok) / window,
        "window_s": window,
        "e2e_ms": _quantiles(e2e),
        "call_ms": _quantiles(call),
        "events_seen": len(e2e),
        "missing": sum(1 for r in ok if r[0] not in arrivals),
    }


def _quantiles(values: list[float]) -> dict[str, float]:
    nan = float("nan")
    return {
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": values[-1] if values else nan,
        "min": values[0] if values else nan,
    }


def _progress(r: dict[str, Any]) -> None:
    print(
        f"  {r['rate_target']:g}/s: {r['achieved_rate']:.0f}/s achieved, {r['ok']} ok,"
        f" {sum(r['errors'].values())} errors, e2e p50 {r['e2e_ms']['p50']:.1f} ms"
        f" p99 {r['e2e_ms']['p99']:.1f} ms, server {r['server_cpu_ms_per_ok_call']:.2f} ms"
        " CPU/command",
        file=sys.stderr,
        flush=True,
    )


def _table(result: dict[str, Any]) -> None:
    rows = []
    for r in result["steps"]:
        e, c = r["e2e_ms"], r["call_ms"]
        rows.append([
            f"{r['rate_target']:g}", r["achieved_rate"], f"{r['ok']:,} / {r['commands']:,}",
            json.dumps(r["errors"]) if r["errors"] else "0",
            f"{c['p50']:.1f} / {c['p99']:.1f}", e["p50"], e["p99"], e["max"], r["missing"],
            r["server_cpu_ms_per_ok_call"], r["server_cpu_cores"],
        ])  # fmt: skip
    print_table(
        f"e2e_latency (PlaceOrder for {result['seconds']:g} s per rate, {result['app']};"
        " wirebus serve + in-process relay, PostgreSQL, Kafka; e2e = call returned -> record on"
        " Kafka)",
        ["target /s", "achieved /s", "ok / sent", "errors", "call p50 / p99 ms", "e2e p50 ms",
         "e2e p99 ms", "e2e max ms", "missing", "server CPU ms/cmd", "server cores"],
        rows,
    )  # fmt: skip
    print(
        f"outbox pending / failed after the run: {result['outbox_pending_after']}"
        f" / {result['outbox_failed_after']}"
    )


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 s per rate instead of 20 s")
    ap.add_argument("--seconds", type=float, default=None, help="measured seconds per rate")
    ap.add_argument("--rates", default="300,500,700,1000,1200", help="PlaceOrder/s, in order")
    ap.add_argument("--rate", type=float, default=None, help="one rate only (overrides --rates)")
    ap.add_argument("--profile-rate", type=float, default=None, help="py-spy the server here")
    ap.add_argument("--profile-out", default="e2e-profile.md", help="breakdown (markdown)")
    ap.add_argument("--profile-top", type=int, default=25, help="rows per breakdown table")
    ap.add_argument(
        "--profile-native",
        action="store_true",
        help="py-spy --native: C/Cython frames too, but the server is paused per sample",
    )
    ap.add_argument(
        "--app",
        choices=list(APPS),
        default="place-order",
        help="place-order: one outbox row per call, as earlier rounds (default); shop: the"
        " shop as it is (3 outbox rows per PlaceOrder)",
    )
    ap.add_argument("--json", default=None, help="write results here")
    ap.add_argument("--client", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.seconds = args.seconds or (5.0 if args.quick else 20.0)
    if args.client:
        run_loop(client(args.client, args.rate, args.seconds, args.out))
        return None
    args.rates = [args.rate] if args.rate else [float(x) for x in args.rates.split(",") if x]
    if not args.rates or min(args.rates) <= 0:
        ap.error("--rates must be positive numbers")
    if args.profile_rate is not None and args.profile_rate not in args.rates:
        ap.error(f"--profile-rate {args.profile_rate:g} is not one of the rates")
    bootstrap = os.environ.get(KAFKA_ENV)
    url = os.environ.get(DB_ENV, "")
    if not bootstrap or not url.startswith("postgresql"):
        print(f"e2e_latency: skipped, needs {KAFKA_ENV} and a postgresql {DB_ENV}")
        return None
    print(machine_info(), file=sys.stderr)
    result = run_loop(measure(args, bootstrap, url))
    _table(result)
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
