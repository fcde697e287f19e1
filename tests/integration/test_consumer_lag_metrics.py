"""``wirebus_consumer_lag{topic,partition,group}`` on real Kafka, scraped over HTTP.

A runtime with metrics consumes its own events: the lag of each partition of
the topic appears, and once every event is handled it is 0 everywhere.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from shop.orders.v1 import orders_pb2

from tests.unit.test_metrics import free_port, scrape
from wirebus import App, Command, Context, Event, Router
from wirebus.runtime import Runtime
from wirebus.settings import Settings
from wirebus.testing import wait_until


def lag_app(topic: str, handled: list[str]) -> App:
    class Placed(Event, proto=orders_pb2.OrderPlaced, key="order_id", topic=topic):
        order_id: str
        customer_id: str
        total_cents: int
        placed_at: dt.datetime

    class Place(Command[None], proto=orders_pb2.PlaceOrderRequest):
        customer_id: str

    router = Router()

    @router.handler
    async def place(cmd: Place, ctx: Context) -> None:
        now = dt.datetime.now(dt.UTC)
        ctx.emit(Placed(order_id=cmd.customer_id, customer_id="c", total_cents=1, placed_at=now))

    @router.handler
    async def record(event: Placed) -> None:
        handled.append(event.order_id)

    return App(name=f"lag-{topic}", routers=[router], events=[Placed])


async def test_consumer_lag_per_partition_is_reported_and_reaches_zero(
    tmp_path: Path, bootstrap: str, fresh: str
) -> None:
    handled: list[str] = []
    app = lag_app(fresh, handled)
    port = free_port()
    settings = Settings(
        kafka_bootstrap=bootstrap, database_url=f"sqlite+aiosqlite:///{tmp_path}/lag.db"
    )
    async with Runtime(
        app, settings, consume=True, group=fresh, metrics_port=port, lag_interval=0.2
    ) as runtime:
        assert runtime.mediator is not None
        sends = [f"o-{i}" for i in range(30)]
        place = next(s.message_type for s in app.specs if s.kind != "event")
        for order_id in sends:
            await runtime.mediator.send(place(customer_id=order_id))
        await wait_until(lambda: sorted(handled) == sorted(sends), within=60)

        def lags() -> dict[str, float]:
            values = scrape(port)
            return {k: v for k, v in values.items() if k.startswith("wirebus_consumer_lag{")}

        async def settled() -> bool:
            current = await asyncio.to_thread(lags)
            return len(current) == 3 and not any(current.values())

        await wait_until(settled, within=30)
        current = await asyncio.to_thread(lags)
    for partition in range(3):
        key = f'wirebus_consumer_lag{{group="{fresh}",partition="{partition}",topic="{fresh}"}}'
        assert current[key] == 0
