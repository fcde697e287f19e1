"""Consumer catch-up: records/s of a backlog through ``ConsumerRunner`` on a real database.

Two rows, same backlog of ``CapturePayment`` records on the in-memory broker
(3 partitions; ``backlog_noop_app.capture_payments``), same PostgreSQL (or
SQLite) database, same runner:

- ``noop``      ``backlog_noop_app``: a handler that does nothing (no outbox row; inbox only);
- ``payments``  the shop's payments slice: ``CapturePayment -> PaymentCaptured``
  through the outbox (one outbox row and one inbox row per record).

Until the checkout saga (wave 13) the slice answered ``OrderPlaced`` instead,
with the same work per record.

Run: ``python bench/consumer_backlog_inprocess.py --url postgresql+asyncpg://... -n 5000``
(a fresh database is best; the tables are created if missing). A measurement,
not a test: nothing here asserts on timing.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import time
import uuid
from typing import Any

from backlog_noop_app import app as noop_app
from backlog_noop_app import capture_payments

from examples.shop.app import app as shop_app
from examples.shop.payments.messages import CapturePayment
from wirebus import App
from wirebus.brokers.memory import InMemoryBroker
from wirebus.consumer import EventProcessor

try:  # a baseline checkout (bench/compare.py) may predate the module
    from wirebus.consumer_runner import ConsumerRunner
except ImportError:  # pragma: no cover
    from wirebus.consumer import ConsumerRunner  # type: ignore[attr-defined,no-redef]
from wirebus.db import Database
from wirebus.inbox.sqlalchemy import SqlAlchemyInbox
from wirebus.testing import wait_until


async def measure(app: App, url: str, n: int, routers: frozenset[str] | None) -> float:
    """Records/s of ``n`` records consumed from a filled topic until all reached an outcome."""
    database = Database(url, create_schema=True, extra_metadata=[m for m in [app.metadata] if m])
    broker = InMemoryBroker(partitions=3)
    registry = app.registry()
    publisher = broker.publisher(registry, source="bench")
    await publisher.publish_many(capture_payments(n))
    topic = registry.by_type(CapturePayment).topic  # type: ignore[union-attr]
    async with app.mediator(database=database, publisher=publisher) as mediator:
        extra: dict[str, Any] = {}
        if "database" in inspect.signature(EventProcessor).parameters:
            extra["database"] = database
        processor = EventProcessor(
            mediator,
            registry,
            group=f"bench-{uuid.uuid4().hex[:8]}",
            inbox=SqlAlchemyInbox(database.engine),
            dead_letters=publisher,
            routers=routers,
            claim_inbox=True,
            **extra,
        )
        runner = ConsumerRunner(broker.consumer(group=processor.group, topics=[topic]), processor)
        await runner.start()
        started = time.perf_counter()
        task = asyncio.create_task(runner.run())
        await wait_until(lambda: sum(runner.outcomes.values()) >= n, within=600)
        elapsed = time.perf_counter() - started
        await runner.stop()
        await task
        assert runner.outcomes.get("handled") == n, runner.outcomes
    return n / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("-n", type=int, default=5000)
    args = parser.parse_args()
    noop = await measure(noop_app, args.url, args.n, None)
    payments = await measure(shop_app, args.url, args.n, frozenset({"payments"}))
    print(f"{'row':<10} {'records/s':>10}")
    print(f"{'noop':<10} {noop:>10,.0f}")
    print(f"{'payments':<10} {payments:>10,.0f}")


if __name__ == "__main__":
    asyncio.run(main())
