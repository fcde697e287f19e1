"""A gateway app whose one method has a fixed cost, for ``load_shedding.py``.

``GetOrder`` awaits ``WIREBUS_BENCH_IO_MS`` milliseconds (as a handler
waiting on its database does; 20 by default), then spins the CPU for
``WIREBUS_BENCH_COST_MS`` milliseconds (1 by default) and answers a fixed
``Order``: a server whose capacity is known (about 1000 / (cost + overhead)
calls per second on one core), so a flood of calls queues behind it. The
other shop methods are unbound. Example::

    wirebus serve fixed_cost_app:app --app-dir bench --no-relay --port 50051
"""

from __future__ import annotations

import asyncio
import os
import time

from shop.orders.v1 import orders_pb2

from wirebus import App, Router

COST_S = float(os.environ.get("WIREBUS_BENCH_COST_MS", "1")) / 1000
IO_S = float(os.environ.get("WIREBUS_BENCH_IO_MS", "20")) / 1000
ORDER = orders_pb2.Order(order_id="fixed", customer_id="bench")

router = Router("fixed-cost")


@router.handler
async def get_order(query: orders_pb2.GetOrderRequest) -> orders_pb2.Order:
    if IO_S:
        await asyncio.sleep(IO_S)
    until = time.perf_counter() + COST_S
    while time.perf_counter() < until:  # CPU, as a handler doing real work holds it
        pass
    return ORDER


app = App(name="bench-fixed-cost", services=[orders_pb2], routers=[router], allow_unbound=True)
