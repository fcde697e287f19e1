"""Unary gRPC throughput: wirebus Gateway vs a hand-written grpc.aio servicer.

The method is ``shop.orders.v1.OrderService/GetOrder``; every server answers
with the same fixed ``Order`` (3 line items), built once.

Servers (each in its own subprocess, on 127.0.0.1, port picked by the OS):
  raw         subclass of ``orders_pb2_grpc.OrderServiceServicer`` registered
              with ``add_OrderServiceServicer_to_server``; returns the prebuilt proto
  gateway     ``wirebus.Gateway`` over an App whose handler takes the raw
              ``GetOrderRequest`` and returns the prebuilt ``Order`` proto
              (``allow_unbound=True`` for the other methods)
  gateway-dc  the same with a dataclass query (``GetOrder``) and a dataclass
              response (``OrderView``, built once): from_proto + proto() per call

Each server kind runs once under the default asyncio loop and once under
uvloop. The client is one separate process (grpc.aio, always the default
asyncio loop so it is identical for every row) keeping 64 calls in flight:
1 s warm-up, then a measured window (10 s by default). Reported: calls/s,
p50 and p99 latency, and the server process's CPU time per call (user+sys
from /proc, over the measured window), which does not depend on whether the
client or the server is the bottleneck on a 2-core machine.

Run: ``PYTHONPATH=gen/python:. .venv/bin/python bench/gateway_vs_raw.py [--quick] [--duration S] [--json out.json]``
Internal modes: ``--serve KIND --loop LOOP`` and ``--client --port N``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
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

KINDS = ("raw", "gateway", "gateway-dc")
LOOPS = ("asyncio", "uvloop")
SERVER_MAX_LIFETIME_S = 600.0  # a server never outlives this, whatever happens to its parent


# ---------------------------------------------------------------- server side


def _fixed_order() -> tuple[Any, Any]:
    """The fixed answer, as a proto and as an ``OrderView`` dataclass (equal on the wire)."""
    import datetime as dt

    from examples.shop.orders.messages import LineItem, OrderStatus, OrderView

    view = OrderView(
        order_id="0b6f3a1e-4d7c-4e58-9a53-0f0a6b1c2d3e",
        customer_id="customer-42",
        items=(
            LineItem(sku="SKU-APPLE", quantity=3, price_cents=120),
            LineItem(sku="SKU-PEAR", quantity=1, price_cents=250),
            LineItem(sku="SKU-PLUM", quantity=12, price_cents=45),
        ),
        total_cents=1150,
        status=OrderStatus.PENDING,
        placed_at=dt.datetime(2025, 3, 14, 15, 9, 26, 535897, tzinfo=dt.UTC),
    )
    return view.proto(), view


async def _serve(kind: str) -> None:
    import grpc
    from shop.orders.v1 import orders_pb2, orders_pb2_grpc

    order_proto, order_view = _fixed_order()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # stop when the parent closes our stdin (or after the hard lifetime cap)
    loop.add_reader(sys.stdin.fileno(), stop.set)
    loop.call_later(SERVER_MAX_LIFETIME_S, stop.set)

    if kind == "raw":

        class Servicer(orders_pb2_grpc.OrderServiceServicer):
            async def GetOrder(self, request: Any, context: Any) -> Any:
                return order_proto

        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        orders_pb2_grpc.add_OrderServiceServicer_to_server(Servicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(f"PORT {port}", flush=True)
        await stop.wait()
        await server.stop(0)
        return

    import wirebus
    from examples.shop.orders.messages import GetOrder, OrderView

    router = wirebus.Router("bench")
    if kind == "gateway":

        @router.handler
        async def get_order(query: orders_pb2.GetOrderRequest) -> orders_pb2.Order:
            return order_proto

    else:

        @router.handler
        async def get_order_dc(query: GetOrder) -> OrderView:
            return order_view

    app = wirebus.App(name="bench", services=[orders_pb2], routers=[router], allow_unbound=True)
    async with wirebus.Gateway(
        app, wirebus.GatewayConfig(host="127.0.0.1", port=0, grace_seconds=0)
    ) as gw:
        print(f"PORT {gw.port}", flush=True)
        await stop.wait()


# ---------------------------------------------------------------- client side


async def _client(port: int, concurrency: int, warmup: float, duration: float) -> dict[str, Any]:
    import grpc
    from shop.orders.v1 import orders_pb2, orders_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        request = orders_pb2.GetOrderRequest(order_id="0b6f3a1e")
        first = await stub.GetOrder(request, timeout=10)
        assert first.total_cents == 1150 and len(first.items) == 3, first

        t_start = time.perf_counter()
        t_measure = t_start + warmup
        t_end = t_measure + duration
        latencies: list[list[float]] = [[] for _ in range(concurrency)]
        errors = [0]
        marked = asyncio.Event()

        async def mark() -> None:
            await asyncio.sleep(max(0.0, t_measure - time.perf_counter()))
            print("MEASURE-START", flush=True)
            marked.set()

        async def worker(out: list[float]) -> None:
            call = stub.GetOrder
            perf = time.perf_counter
            while True:
                t0 = perf()
                if t0 >= t_end:
                    return
                try:
                    await call(request, timeout=10)
                except grpc.aio.AioRpcError:
                    errors[0] += 1
                    continue
                t1 = perf()
                if t0 >= t_measure and t1 <= t_end:
                    out.append(t1 - t0)

        await asyncio.gather(mark(), *(worker(lat) for lat in latencies))
        print("MEASURE-END", flush=True)
    lat = sorted(x for per in latencies for x in per)
    return {
        "calls": len(lat),
        "calls_per_s": len(lat) / duration,
        "p50_ms": percentile(lat, 50) * 1e3,
        "p99_ms": percentile(lat, 99) * 1e3,
        "errors": errors[0],
    }


# ---------------------------------------------------------------- orchestration


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc); nan elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    """One stdout line of ``proc``, or TimeoutError (bounded wait)."""
    import selectors

    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise TimeoutError(f"no output from {proc.args!r} within {timeout} s")
    return proc.stdout.readline()


def run_one(
    kind: str, loop: str, *, duration: float, warmup: float, concurrency: int
) -> dict[str, Any]:
    me = [sys.executable, str(Path(__file__).resolve())]
    server = subprocess.Popen(
        [*me, "--serve", kind, "--loop", loop],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=code_env(),
        cwd=code_root(),
    )
    client: subprocess.Popen[str] | None = None
    try:
        line = _readline(server, 30)
        if not line.startswith("PORT "):
            raise RuntimeError(f"server {kind}/{loop} did not start: {line!r}")
        port = int(line.split()[1])
        client = subprocess.Popen(
            [
                *me,
                "--client",
                "--port",
                str(port),
                "--duration",
                str(duration),
                "--warmup",
                str(warmup),
                "--concurrency",
                str(concurrency),
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=code_env(),
            cwd=code_root(),
        )
        limit = warmup + duration + 60
        cpu0 = cpu1 = float("nan")
        result: dict[str, Any] | None = None
        deadline = time.monotonic() + limit
        while result is None:
            line = _readline(client, max(1.0, deadline - time.monotonic()))
            if not line:
                raise RuntimeError(f"client for {kind}/{loop} exited with {client.wait(10)}")
            line = line.strip()
            if line == "MEASURE-START":
                cpu0 = _cpu_seconds(server.pid)
            elif line == "MEASURE-END":
                cpu1 = _cpu_seconds(server.pid)
            elif line.startswith("{"):
                result = json.loads(line)
        client.wait(30)
    finally:
        if client is not None and client.poll() is None:
            client.kill()
            client.wait(10)
        if server.stdin:
            server.stdin.close()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
    result["server_cpu_us_per_call"] = (
        (cpu1 - cpu0) / result["calls"] * 1e6 if result["calls"] else float("nan")
    )
    result.update(kind=kind, loop=loop, duration_s=duration, concurrency=concurrency)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 s windows, 0.5 s warm-up")
    ap.add_argument(
        "--duration", type=float, default=None, help="measured seconds per row (default 10)"
    )
    ap.add_argument("--warmup", type=float, default=None, help="warm-up seconds (default 1)")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="repeat every row this many times, order rotated; medians reported (default 2, quick 1)",
    )
    ap.add_argument("--loops", default=",".join(LOOPS), help="comma-separated: asyncio,uvloop")
    ap.add_argument("--json", default=None)
    ap.add_argument("--serve", choices=KINDS, help=argparse.SUPPRESS)
    ap.add_argument("--loop", choices=LOOPS, default="asyncio", help=argparse.SUPPRESS)
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    duration = args.duration or (2.0 if args.quick else 10.0)
    warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    duration = min(max(duration, 0.5), 120.0)  # bounded either way
    if args.serve:
        run_loop(_serve(args.serve), args.loop)
        return None
    if args.client:
        out = asyncio.run(_client(args.port, args.concurrency, warmup, duration))
        print(json.dumps(out), flush=True)
        return None

    loops = [x for x in args.loops.split(",") if x]
    print(machine_info(), file=sys.stderr)
    rounds = args.rounds or (1 if args.quick else 2)
    samples: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rnd in range(rounds):
        for loop in loops:
            order = (
                KINDS[rnd % len(KINDS) :] + KINDS[: rnd % len(KINDS)]
            )  # rotate: no fixed position
            for kind in order:
                r = run_one(
                    kind, loop, duration=duration, warmup=warmup, concurrency=args.concurrency
                )
                samples.setdefault((loop, kind), []).append(r)
                print(
                    f"  round {rnd + 1} {loop:8} {kind:11} {r['calls_per_s']:9.0f} calls/s"
                    f"  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms"
                    f"  server {r['server_cpu_us_per_call']:.1f} µs CPU/call",
                    file=sys.stderr,
                    flush=True,
                )
    rows: list[dict[str, Any]] = []
    for loop in loops:
        for kind in KINDS:
            runs = samples[(loop, kind)]
            agg = {
                k: statistics.median(x[k] for x in runs)
                for k in ("calls_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_call")
            }
            agg.update(
                kind=kind,
                loop=loop,
                rounds=len(runs),
                errors=sum(x["errors"] for x in runs),
                calls_per_s_rounds=[x["calls_per_s"] for x in runs],
                duration_s=duration,
                concurrency=args.concurrency,
            )
            rows.append(agg)
    by = {(r["loop"], r["kind"]): r for r in rows}
    for r in rows:
        raw = by[(r["loop"], "raw")]
        r["ratio"] = r["calls_per_s"] / raw["calls_per_s"]
        r["cpu_ratio"] = r["server_cpu_us_per_call"] / raw["server_cpu_us_per_call"]
    print_table(
        f"gateway_vs_raw: GetOrder, {args.concurrency} in flight, {duration:g} s window"
        f" after {warmup:g} s warm-up, median of {rounds} round(s)",
        [
            "loop",
            "server",
            "calls/s",
            "rounds calls/s",
            "p50 ms",
            "p99 ms",
            "x raw calls/s",
            "server CPU µs/call",
            "x raw CPU",
            "errors",
        ],
        [
            [
                r["loop"],
                r["kind"],
                r["calls_per_s"],
                " / ".join(f"{x:.0f}" for x in r["calls_per_s_rounds"]),
                r["p50_ms"],
                r["p99_ms"],
                r["ratio"],
                r["server_cpu_us_per_call"],
                r["cpu_ratio"],
                r["errors"],
            ]
            for r in rows
        ],
    )
    ratios = {
        f"{loop}:{kind}/raw": by[(loop, kind)]["ratio"] for loop in loops for kind in KINDS[1:]
    }
    print_table(
        "gateway_vs_raw: target gateway/raw calls/s >= 0.95",
        ["measure", "value", "target"],
        [[k, v, ">= 0.95" if k.endswith(":gateway/raw") else "-"] for k, v in ratios.items()],
    )
    result = {
        "bench": "gateway_vs_raw",
        "rows": rows,
        "ratios": ratios,
        "duration_s": duration,
        "warmup_s": warmup,
        "rounds": rounds,
    }
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
