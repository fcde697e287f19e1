"""Past capacity: 2,000 concurrent calls on 4 channels, without and with a limit.

The server is ``wirebus serve fixed_cost_app:app`` (``GetOrder`` awaits 20 ms,
as on a database, then costs 1 ms of CPU; see ``fixed_cost_app.py``) in its
own process; the client is
another process (grpc.aio) that opens 4 channels (4 connections) and starts
``--calls`` calls at once, round-robin over the channels, each with a 30 s
deadline. Each row is one fresh server: ``limit 0`` runs it as it comes
(no ``--max-concurrent-calls``), ``limit N`` with ``--max-concurrent-calls N``.
Reported: how many calls ended OK, RESOURCE_EXHAUSTED, CANCELLED or with
another code, p50/p99 latency of the OK calls and of the refused ones, and
the wall time of the whole flood.

With ``--io-ms 0`` the handler is pure CPU and never yields, so the server
never has more than one call in flight: the flood queues in grpc core, where
no limit of the gateway sees it (and grpc core's own pending-call bound
CANCELs about a tenth of the calls); a limit sheds load only where calls
wait in the process, as they do on a database.

Run: ``PYTHONPATH=gen/python:. .venv/bin/python bench/load_shedding.py [--calls 2000] [--limits 0,64] [--json out.json]``
(``--quick`` is 400 calls). Internal mode: ``--client --port N``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import code_env, code_root, machine_info, percentile, print_table, write_json  # noqa: E402

CHANNELS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _flood(port: int, calls: int) -> dict[str, Any]:
    import grpc
    import grpc.aio
    from shop.orders.v1 import orders_pb2, orders_pb2_grpc

    # a local subchannel pool each: 4 connections, not one shared
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) for _ in range(CHANNELS)
    ]
    for channel in channels:
        await asyncio.wait_for(channel.channel_ready(), 30)
    stubs = [orders_pb2_grpc.OrderServiceStub(c) for c in channels]
    request = orders_pb2.GetOrderRequest(order_id="o")
    for stub in stubs:  # warm each connection once
        await stub.GetOrder(request, timeout=30)

    async def one(i: int) -> tuple[str, float]:
        started = time.perf_counter()
        try:
            await stubs[i % CHANNELS].GetOrder(request, timeout=30)
            code = "OK"
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
        return code, time.perf_counter() - started

    began = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(calls)))
    wall = time.perf_counter() - began
    for channel in channels:
        await channel.close()
    by_code: dict[str, list[float]] = collections.defaultdict(list)
    for code, took in results:
        by_code[code].append(took)
    return {"wall_s": wall, "latencies": {k: sorted(v) for k, v in by_code.items()}}


def _row(limit: int, calls: int, cost_ms: float, io_ms: float) -> dict[str, Any]:
    port = _free_port()
    args = ["serve", "fixed_cost_app:app", "--app-dir", str(HERE), "--no-relay"]
    args += ["--port", str(port), "--log-level", "warning"]
    if limit:
        args += ["--max-concurrent-calls", str(limit)]
    env = code_env({"WIREBUS_BENCH_COST_MS": str(cost_ms), "WIREBUS_BENCH_IO_MS": str(io_ms)})
    server = subprocess.Popen(
        [sys.executable, "-m", "wirebus", *args], cwd=code_root(), env=env,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        client = subprocess.run(
            [sys.executable, __file__, "--client", "--port", str(port), "--calls", str(calls)],
            cwd=code_root(), env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        server.terminate()
        _, err = server.communicate(timeout=60)
    if client.returncode != 0:
        raise SystemExit(f"client failed:\n{client.stderr}\nserver:\n{err}")
    flood = json.loads(client.stdout)
    lat = flood["latencies"]
    ok = lat.get("OK", [])
    refused = lat.get("RESOURCE_EXHAUSTED", [])
    counted = {"OK", "RESOURCE_EXHAUSTED", "CANCELLED"}
    return {
        "limit": limit or "none",
        "OK": len(ok),
        "RESOURCE_EXHAUSTED": len(refused),
        "CANCELLED": len(lat.get("CANCELLED", [])),
        "other": ", ".join(f"{k} {len(v)}" for k, v in lat.items() if k not in counted) or "0",
        "OK p50 ms": percentile(ok, 50) * 1000,
        "OK p99 ms": percentile(ok, 99) * 1000,
        "refused p99 ms": percentile(refused, 99) * 1000,
        "wall s": flood["wall_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--limits", default="0,64", help="comma-separated; 0 = no limit")
    parser.add_argument("--cost-ms", type=float, default=1.0, help="CPU per call")
    parser.add_argument("--io-ms", type=float, default=20.0, help="awaited per call")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--client", action="store_true")
    parser.add_argument("--port", type=int)
    opts = parser.parse_args()
    if opts.client:
        print(json.dumps(asyncio.run(_flood(opts.port, opts.calls))))
        return
    calls = 400 if opts.quick else opts.calls
    rows = [_row(int(x), calls, opts.cost_ms, opts.io_ms) for x in opts.limits.split(",")]
    print(machine_info())
    title = f"load_shedding: {calls} concurrent GetOrder on {CHANNELS} channels, {opts.io_ms} ms awaited + {opts.cost_ms} ms CPU each"
    headers = list(rows[0])
    print_table(title, headers, [[r[h] for h in headers] for r in rows])
    write_json(
        opts.json, {"calls": calls, "cost_ms": opts.cost_ms, "io_ms": opts.io_ms, "rows": rows}
    )


if __name__ == "__main__":
    main()
