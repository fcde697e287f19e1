"""A gateway app whose one method has a fixed CPU cost, for ``load_shedding.py``.

``GetOrder`` spins the CPU for ``WIREBUS_BENCH_COST_MS`` milliseconds (2 by
default) and answers a fixed ``Order``: a server whose capacity is known
(about 1000 / (cost + overhead) calls per second on one core), so a flood
of calls queues behind it. The other shop methods are unbound. Example::

    wirebus serve fixed_cost_app:app --app-dir bench --no-relay --port 50051
"""

from __future__ import annotations

import os
import time

from shop.orders.v1 import orders_pb2

from wirebus import App, Router

COST_S = float(os.environ.get("WIREBUS_BENCH_COST_MS", "2")) / 1000
ORDER = orders_pb2.Order(order_id="fixed", customer_id="bench")

router = Router("fixed-cost")


@router.handler
async def get_order(query: orders_pb2.GetOrderRequest) -> orders_pb2.Order:
    until = time.perf_counter() + COST_S
    while time.perf_counter() < until:  # CPU, as a handler doing real work holds it
        pass
    return ORDER


app = App(name="bench-fixed-cost", services=[orders_pb2], routers=[router], allow_unbound=True)
