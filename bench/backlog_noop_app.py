"""The no-op peer of the shop's payments slice, for ``consumer_backlog.py``.

One event handler for the shop's ``OrderPlaced`` (topic ``shop.orders.v1``) that
does nothing and emits nothing: consumed by ``wirebus consume`` on the same
PostgreSQL database settings as the payments slice, each record still costs the
consumer's unit of work and inbox mark, but no outbox row. Example::

    wirebus consume backlog_noop_app:app --app-dir bench --group g1
"""

from __future__ import annotations

from examples.shop.orders.messages import OrderPlaced
from wirebus import App, Router

router = Router("noop")


@router.handler
async def ignore_order(event: OrderPlaced) -> None:
    return None


app = App(name="bench-noop", routers=[router], events=[OrderPlaced])
