"""RPC metrics and access log (issue 13): their cost per call, against the same gateway without.

One in-process gateway per scenario serves a trivial unary method (no
database, no events) on 127.0.0.1; ``--concurrency`` clients on one channel
make ``--calls`` calls each round. Scenarios, interleaved over ``--rounds``
so drift hits all alike:

* **bare**: no ``RpcMetrics``, the ``wirebus.access`` logger disabled (WARNING);
* **metrics**: ``RpcMetrics`` (``grpc_server_*``), access log disabled;
* **metrics+log**: both, the access line formatted and written to /dev/null.

Reported: calls/s (median of rounds) and the per-call cost difference in
microseconds against **bare**, measured in the same run. Nothing asserts.

Example::

    PYTHONPATH=src:gen/python:. .venv/bin/python bench/rpc_observability.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import time

import grpc.aio
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

from wirebus import App, Router
from wirebus.access_log import ACCESS_LOGGER
from wirebus.gateway import Gateway, GatewayConfig
from wirebus.metrics import Metrics

SCENARIOS = ("bare", "metrics", "metrics+log")


def trivial_app() -> App:
    router = Router()

    @router.handler
    async def get_order(query: orders_pb2.GetOrderRequest) -> orders_pb2.Order:
        return orders_pb2.Order(order_id=query.order_id)

    return App(name="bench", services=[orders_pb2], routers=[router], allow_unbound=True)


async def one_round(scenario: str, calls: int, concurrency: int) -> float:
    """Calls per second of one round of ``scenario``."""
    access = logging.getLogger(ACCESS_LOGGER)
    access.setLevel(logging.INFO if scenario == "metrics+log" else logging.WARNING)
    rpc = Metrics().rpc if scenario != "bare" else None
    gateway = Gateway(trivial_app(), GatewayConfig(port=0), metrics=rpc)
    async with gateway, grpc.aio.insecure_channel(gateway.address) as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        request = orders_pb2.GetOrderRequest(order_id="o-1")
        await stub.GetOrder(request)

        async def client() -> None:
            for _ in range(calls):
                await stub.GetOrder(request)

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return calls * concurrency / elapsed


async def main(args: argparse.Namespace) -> None:
    sink = logging.FileHandler(os.devnull)
    sink.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    access = logging.getLogger(ACCESS_LOGGER)
    access.addHandler(sink)
    access.propagate = False
    rates: dict[str, list[float]] = {s: [] for s in SCENARIOS}
    for _ in range(args.rounds):
        for scenario in SCENARIOS:
            rates[scenario].append(await one_round(scenario, args.calls, args.concurrency))
    bare = statistics.median(rates["bare"])
    print(f"{'scenario':<12} {'calls/s':>10} {'us/call vs bare':>16}")
    for scenario in SCENARIOS:
        rate = statistics.median(rates[scenario])
        extra_us = (1 / rate - 1 / bare) * 1e6
        print(f"{scenario:<12} {rate:>10.0f} {extra_us:>+16.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 calls x 3 rounds")
    parser.add_argument("--calls", type=int, default=500, help="calls per client per round")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    if options.quick:
        options.calls, options.rounds = 125, 3
    asyncio.run(main(options))
