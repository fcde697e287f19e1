"""Unary calls over the Connect port vs the grpc.aio gateway vs a raw grpc.aio servicer.

Methods: ``shop.orders.v1.OrderService/GetOrder`` (answers a fixed ``Order``
of 3 items) and ``PlaceOrder`` (2 line items in, a fixed
``PlaceOrderResponse`` out); every server answers with messages built once,
so what is measured is the transport, decoding, dispatch and encoding.

Servers (each in its own subprocess on uvloop, as ``wirebus serve`` runs):
  raw           a ``orders_pb2_grpc.OrderServiceServicer`` subclass on grpc.aio
  gateway       ``wirebus.Gateway`` over an App with those two handlers
  connect       ``wirebus.connect.ConnectServer`` (uvicorn + httptools) over the
                same App, called with the Connect protocol, binary codec
  connect-json  the same server, called with ``application/json``

Clients are ``--clients`` separate processes (default 2) sharing
``--concurrency`` calls in flight (default 64), so one client process is not
the bottleneck: the Connect client is a raw HTTP/1.1 keep-alive loop over
asyncio streams (one request in flight per connection, request bytes built
once); the gRPC client is a grpc.aio channel calling with bytes (no
(de)serialization). Every client counts the calls that finish inside one
shared wall-clock window; the parent reads the server process's CPU time
(user+sys, /proc) at the window's start and end. Reported: calls/s, server
CPU microseconds per call, and that CPU as a ratio of the gateway's for the
same method (the issue's target: Connect binary <= 0.6).

Run: ``PYTHONPATH=src:gen/python:. .venv/bin/python bench/connect_vs_grpc.py [--quick] [--json out.json]``
Internal modes: ``--serve KIND`` and ``--client``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
    print_table,
    proc_cpu_seconds,
    run_loop,
    write_json,
)

ROWS = ("raw", "gateway", "connect", "connect-json")
METHODS = ("GetOrder", "PlaceOrder")
SERVICE = "/shop.orders.v1.OrderService/"
SERVER_MAX_LIFETIME_S = 600.0


# ---------------------------------------------------------------- messages


def _messages() -> dict[str, Any]:
    from shop.orders.v1 import orders_pb2

    items = [
        orders_pb2.LineItem(sku="SKU-APPLE", quantity=3, price_cents=120),
        orders_pb2.LineItem(sku="SKU-PEAR", quantity=1, price_cents=250),
        orders_pb2.LineItem(sku="SKU-PLUM", quantity=12, price_cents=45),
    ]
    order = orders_pb2.Order(
        order_id="0b6f3a1e-4d7c-4e58-9a53-0f0a6b1c2d3e", customer_id="customer-42",
        items=items, total_cents=1150, status=orders_pb2.ORDER_STATUS_PENDING,
    )  # fmt: skip
    order.placed_at.FromSeconds(1_741_964_966)
    return {
        "order": order,
        "placed": orders_pb2.PlaceOrderResponse(order_id=order.order_id),
        "GetOrder": orders_pb2.GetOrderRequest(order_id=order.order_id),
        "PlaceOrder": orders_pb2.PlaceOrderRequest(customer_id="customer-42", items=items[:2]),
    }


# ---------------------------------------------------------------- servers


async def _serve(kind: str) -> None:
    import grpc
    from shop.orders.v1 import orders_pb2, orders_pb2_grpc

    m = _messages()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), stop.set)  # the parent closes our stdin
    loop.call_later(SERVER_MAX_LIFETIME_S, stop.set)
    if kind == "raw":

        class Servicer(orders_pb2_grpc.OrderServiceServicer):
            async def GetOrder(self, request: Any, context: Any) -> Any:
                return m["order"]

            async def PlaceOrder(self, request: Any, context: Any) -> Any:
                return m["placed"]

        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        orders_pb2_grpc.add_OrderServiceServicer_to_server(Servicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(f"PORT {port}", flush=True)
        await stop.wait()
        await server.stop(0)
        return

    import wirebus
    from wirebus.connect import ConnectConfig, ConnectServer

    router = wirebus.Router("bench")

    @router.handler
    async def get_order(query: orders_pb2.GetOrderRequest) -> orders_pb2.Order:
        return m["order"]  # type: ignore[no-any-return]

    @router.handler
    async def place_order(cmd: orders_pb2.PlaceOrderRequest) -> orders_pb2.PlaceOrderResponse:
        return m["placed"]  # type: ignore[no-any-return]

    app = wirebus.App(name="bench", services=[orders_pb2], routers=[router], allow_unbound=True)
    server_cm: Any
    if kind == "gateway":
        server_cm = wirebus.Gateway(app, wirebus.GatewayConfig(port=0, grace_seconds=0))
    else:
        server_cm = ConnectServer(app, ConnectConfig(port=0, grace_seconds=0))
    async with server_cm as running:
        print(f"PORT {running.port}", flush=True)
        await stop.wait()


# ---------------------------------------------------------------- clients


async def _http_worker(port: int, head: bytes, start: float, end: float, out: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    done = 0
    try:
        while (now := time.time()) < end:
            writer.write(head)
            headers = await reader.readuntil(b"\r\n\r\n")
            if not headers.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(headers.decode(errors="replace"))
            at = headers.index(b"content-length: ") + 16
            await reader.readexactly(int(headers[at : headers.index(b"\r\n", at)]))
            if now >= start:
                done += 1
    finally:
        out.append(done)
        writer.close()


async def _grpc_worker(call: Any, body: bytes, start: float, end: float, out: list[int]) -> None:
    done = 0
    while (now := time.time()) < end:
        await call(body)
        if now >= start:
            done += 1
    out.append(done)


async def _client(args: argparse.Namespace) -> None:
    m = _messages()
    path = SERVICE + args.method
    message = m[args.method]
    out: list[int] = []
    if args.protocol == "grpc":
        import grpc

        async with grpc.aio.insecure_channel(f"127.0.0.1:{args.port}") as channel:
            call = channel.unary_unary(path)
            body = message.SerializeToString()
            await asyncio.gather(
                *(_grpc_worker(call, body, args.start, args.end, out) for _ in range(args.inflight))
            )
    else:
        if args.protocol == "connect-json":
            from google.protobuf import json_format

            body, ctype = json_format.MessageToJson(message, indent=None).encode(), b"json"
        else:
            body, ctype = message.SerializeToString(), b"proto"
        head = (
            b"POST " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/" + ctype + b"\r\nConnect-Protocol-Version: 1\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        await asyncio.gather(
            *(
                _http_worker(args.port, head, args.start, args.end, out)
                for _ in range(args.inflight)
            )
        )
    print(json.dumps({"calls": sum(out)}), flush=True)


# ---------------------------------------------------------------- driver


def _start_server(kind: str) -> tuple[subprocess.Popen[str], int]:
    me = [sys.executable, str(Path(__file__).resolve())]
    server = subprocess.Popen(
        [*me, "--serve", "connect" if kind == "connect-json" else kind],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=code_env(), cwd=code_root(),
    )  # fmt: skip
    assert server.stdout is not None
    line = server.stdout.readline()
    if not line.startswith("PORT "):
        server.kill()
        raise RuntimeError(f"server {kind} did not start: {line!r}")
    return server, int(line.split()[1])


def run_one(kind: str, method: str, args: argparse.Namespace) -> dict[str, Any]:
    server, port = _start_server(kind)
    protocol = "grpc" if kind in ("raw", "gateway") else kind
    start = time.time() + args.warmup + 1.0  # 1 s for the clients to start
    end = start + args.duration
    me = [sys.executable, str(Path(__file__).resolve())]
    per_client = max(1, args.concurrency // args.clients)
    client_args = [*me, "--client", "--protocol", protocol, "--port", str(port)]
    client_args += ["--method", method, "--start", repr(start), "--end", repr(end)]
    client_args += ["--inflight", str(per_client)]
    clients = [
        subprocess.Popen(
            client_args, stdout=subprocess.PIPE, text=True, env=code_env(), cwd=code_root()
        )
        for _ in range(args.clients)
    ]
    try:
        time.sleep(max(0.0, start - time.time()))
        cpu0 = proc_cpu_seconds(server.pid)
        time.sleep(max(0.0, end - time.time()))
        cpu1 = proc_cpu_seconds(server.pid)
        calls = 0
        for client in clients:
            out, _ = client.communicate(timeout=60)
            if client.returncode != 0:
                raise RuntimeError(f"a {protocol} client failed ({client.returncode})")
            calls += json.loads(out.strip().splitlines()[-1])["calls"]
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
        assert server.stdin is not None
        server.stdin.close()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
    return {
        "kind": kind, "method": method, "calls": calls,
        "calls_per_s": calls / args.duration,
        "server_cpu_us_per_call": (cpu1 - cpu0) / calls * 1e6 if calls else float("nan"),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 s windows")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--serve", choices=("raw", "gateway", "connect"))
    ap.add_argument("--client", action="store_true")
    ap.add_argument("--protocol", default="grpc")
    ap.add_argument("--port", type=int)
    ap.add_argument("--method", default="GetOrder")
    ap.add_argument("--start", type=float)
    ap.add_argument("--end", type=float)
    ap.add_argument("--inflight", type=int, default=32)
    args = ap.parse_args(argv)
    if args.serve:
        run_loop(_serve(args.serve), "uvloop")
        return {}
    if args.client:
        run_loop(_client(args), "uvloop")
        return {}
    if args.quick:
        args.duration, args.warmup = 2.0, 0.5
    results = [run_one(kind, method, args) for method in METHODS for kind in ROWS]
    gateway = {r["method"]: r["server_cpu_us_per_call"] for r in results if r["kind"] == "gateway"}
    for r in results:
        r["cpu_vs_gateway"] = r["server_cpu_us_per_call"] / gateway[r["method"]]
    print(f"\n{machine_info()}; {args.clients} client processes, {args.concurrency} in flight,")
    print(f"{args.duration:g} s windows")
    rows = [
        (r["method"], r["kind"], r["calls_per_s"], r["server_cpu_us_per_call"], r["cpu_vs_gateway"])
        for r in results
    ]
    headers = ("method", "server", "calls/s", "server CPU µs/call", "CPU vs gateway")
    print_table("Connect vs grpc.aio", headers, rows)
    payload = {"benchmark": "connect_vs_grpc", "results": results, "machine": machine_info()}
    write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
