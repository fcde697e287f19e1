"""A consumer app for subprocess tests: records every OrderPlaced it handles in a file.

Configured by the environment of the test that starts it (read at import,
which is fine for a test fixture app): ``RECORDER_TOPIC`` (the topic to read)
and ``RECORDER_FILE`` (where to append one order id per handled event).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os

from shop.orders.v1 import orders_pb2

from wirebus import App, Event, Router

TOPIC = os.environ.get("RECORDER_TOPIC", "recorder")
OUT = os.environ.get("RECORDER_FILE", "recorded.txt")


class Placed(Event, proto=orders_pb2.OrderPlaced, key="order_id", topic=TOPIC):
    order_id: str
    customer_id: str
    total_cents: int
    placed_at: dt.datetime


router = Router("recorder")


@router.handler
async def record(event: Placed) -> None:
    await asyncio.sleep(0.002)  # slow enough for a test to kill the process mid-stream
    await asyncio.to_thread(_append, event.order_id)


def _append(order_id: str) -> None:
    with open(OUT, "a") as out:
        out.write(f"{order_id}\n")


app = App(name="recorder", routers=[router])
