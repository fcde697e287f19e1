"""Request bounds (issue 12, defect 6): what one huge PlaceOrder costs the shop's gateway.

The shop runs in a subprocess (``AppHarness``: gateway, SQLite outbox, relay,
in-memory broker), with a ticker task that records how late the event loop
ran it (the longest block). The client, in this process, places one order
per scenario while it reads an existing order with GetOrder every 10 ms and
samples the server's RSS every 20 ms:

* **empty**: ``--empty`` (default 1,000,000) empty ``LineItem`` s, ~2 MB;
* **valid**: ``--valid`` (default 600,000) items ``quantity=1, price_cents=1``.

Per scenario: the status of the PlaceOrder, its latency, the longest
event-loop block, the peak RSS during the call and the RSS 1 s after it
(each against the RSS just before, measured in the same run), the slowest
GetOrder meanwhile, and the request's size. Nothing here asserts on timing.

Example::

    PYTHONPATH=src:gen/python:. .venv/bin/python bench/request_bounds.py
    PYTHONPATH=src:gen/python:. .venv/bin/python bench/request_bounds.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

try:
    from bench._common import code_env, code_root, machine_info, print_table, write_json
except ModuleNotFoundError:  # run as a script: bench/ is sys.path[0]
    from _common import code_env, code_root, machine_info, print_table, write_json  # type: ignore[no-redef]

TICK_S = 0.005


# ---------------------------------------------------------------- server (subprocess)


async def _serve(lag_file: str) -> None:
    from examples.shop.app import app
    from wirebus.testing import AppHarness

    worst = [0.0]

    async def ticker() -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(TICK_S)
            now = loop.time()
            worst[0] = max(worst[0], now - last - TICK_S)
            last = now
            Path(lag_file).write_text(f"{worst[0]:.6f}")

    async with AppHarness(app, within=60.0) as harness:
        await harness.channel()  # starts the gateway
        task = asyncio.create_task(ticker())
        print(f"PORT {harness.address.rsplit(':', 1)[1]}", flush=True)
        loop = asyncio.get_running_loop()
        while await loop.run_in_executor(None, sys.stdin.readline):  # "reset" until EOF
            worst[0] = 0.0
            Path(lag_file).write_text("0")
        task.cancel()


# ---------------------------------------------------------------- client


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _lag(lag_file: str) -> float:
    try:
        return float(Path(lag_file).read_text() or 0)
    except (OSError, ValueError):
        return 0.0


async def _scenario(
    stub: Any, server: Any, lag_file: str, name: str, request: Any, order_id: str
) -> dict[str, Any]:
    from shop.orders.v1 import orders_pb2

    size = request.ByteSize()
    done = asyncio.Event()
    get_latencies: list[float] = []
    peak = [0.0]

    async def reads() -> None:
        while not done.is_set():
            t0 = time.perf_counter()
            await stub.GetOrder(orders_pb2.GetOrderRequest(order_id=order_id), timeout=60)
            get_latencies.append(time.perf_counter() - t0)
            await asyncio.sleep(0.01)

    async def rss() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mb(pid))
            await asyncio.sleep(0.02)

    pid = server.pid
    await asyncio.sleep(1.0)
    rss_before = _rss_mb(pid)
    server.stdin.write("reset\n")
    server.stdin.flush()
    await asyncio.sleep(0.2)
    tasks = [asyncio.create_task(reads()), asyncio.create_task(rss())]
    await asyncio.sleep(0.1)
    t0 = time.perf_counter()
    try:
        await stub.PlaceOrder(request, timeout=120)
        status = "OK"
    except Exception as exc:  # grpc.aio.AioRpcError: the status is the measurement
        code = getattr(exc, "code", None)
        status = code().name if callable(code) else type(exc).__name__
    latency = time.perf_counter() - t0
    await asyncio.sleep(0.2)
    done.set()
    await asyncio.gather(*tasks)
    await asyncio.sleep(1.0)
    return {
        "scenario": name,
        "request_mb": size / 1e6,
        "status": status,
        "place_s": latency,
        "loop_block_s": _lag(lag_file),
        "rss_before_mb": rss_before,
        "rss_peak_mb": peak[0],
        "rss_after_1s_mb": _rss_mb(pid),
        "get_order_max_s": max(get_latencies, default=float("nan")),
        "get_order_calls": len(get_latencies),
    }


async def _client(port: int, server: Any, lag_file: str, empty: int, valid: int) -> list[Any]:
    import grpc.aio
    from shop.orders.v1 import orders_pb2, orders_pb2_grpc

    limit = 64 * 1024 * 1024
    options = [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        item = orders_pb2.LineItem(sku="book", quantity=1, price_cents=100)
        reply = await stub.PlaceOrder(
            orders_pb2.PlaceOrderRequest(customer_id="alice", items=[item])
        )
        rows = []
        empty_req = orders_pb2.PlaceOrderRequest(customer_id="alice")
        empty_req.items.extend(orders_pb2.LineItem() for _ in range(empty))
        rows.append(await _scenario(stub, server, lag_file, "empty", empty_req, reply.order_id))
        del empty_req
        valid_req = orders_pb2.PlaceOrderRequest(customer_id="alice")
        one = orders_pb2.LineItem(quantity=1, price_cents=1)
        valid_req.items.extend(one for _ in range(valid))
        rows.append(await _scenario(stub, server, lag_file, "valid", valid_req, reply.order_id))
        return rows


def run(empty: int, valid: int) -> list[Any]:
    with tempfile.TemporaryDirectory(prefix="wirebus-bounds-") as tmp:
        lag_file = str(Path(tmp) / "lag")
        server = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve", lag_file],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=code_env(),
            cwd=code_root(),
        )
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            if not line.startswith("PORT "):
                raise RuntimeError(f"the server did not start: {line!r}")
            port = int(line.split()[1])
            return asyncio.run(_client(port, server, lag_file, empty, valid))
        finally:
            if server.stdin:
                server.stdin.close()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(10)


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--empty", type=int, default=1_000_000, help="empty items (scenario 1)")
    ap.add_argument("--valid", type=int, default=600_000, help="valid items (scenario 2)")
    ap.add_argument("--quick", action="store_true", help="100,000 and 60,000 items")
    ap.add_argument("--json", default=None)
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        asyncio.run(_serve(args.serve))
        return None
    empty, valid = (100_000, 60_000) if args.quick else (args.empty, args.valid)
    empty, valid = min(empty, 2_000_000), min(valid, 1_000_000)  # bounded either way
    print(machine_info(), file=sys.stderr)
    rows = run(empty, valid)
    headers = list(rows[0])
    print_table(
        f"Request bounds: {empty:,} empty / {valid:,} valid items",
        headers,
        [[r[h] for h in headers] for r in rows],
    )
    payload = {"benchmark": "request_bounds", "rows": rows}
    write_json(args.json, payload)
    print(json.dumps(payload), file=sys.stderr)
    return payload


if __name__ == "__main__":
    main()
