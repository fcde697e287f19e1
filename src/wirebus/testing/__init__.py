"""``wirebus.testing``: what users write their tests with.

- :class:`AppHarness`: an app running in-process over the in-memory broker
  and an in-memory outbox, with its relay, consumers and (on demand) its
  gRPC gateway; it records what was published, dead-lettered and consumed,
- conformance suites every port adapter passes (outbox stores, brokers),
- :func:`wait_until`, the one bounded poll tests wait with,
- :func:`postgres_database`, a fresh PostgreSQL database dropped afterwards.

Example::

    async with AppHarness(app) as shop:
        await shop.send(PlaceOrder(customer_id="c1", items=items))
        [placed] = await shop.wait_published(OrderPlaced)
"""

from __future__ import annotations

from .captured import Consumed, DeadLetter, Published
from .databases import postgres_database
from .harness import IMMEDIATE_RETRY, AppHarness
from .waiting import wait_until

__all__ = [
    "IMMEDIATE_RETRY",
    "AppHarness",
    "Consumed",
    "DeadLetter",
    "Published",
    "postgres_database",
    "wait_until",
]
