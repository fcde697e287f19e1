"""The shop's PlaceOrder alone, one outbox row per call: the command path ``e2e_latency`` measured.

Since the checkout saga and the status events (wave 13), the shop's
PlaceOrder also emits ``OrderStatusChanged`` and ``OrderSnapshot``: 3 outbox
rows and 3 Kafka records per call (on ``shop.orders.v1``,
``shop.orders.v1.notifications`` and ``shop.orders.v1.snapshots``) instead of
1, and every ``OrderPlaced`` starts a checkout saga in the consumers. This app
keeps the earlier rounds' workload:

- the shop's own ``place_order`` handler (validation, the order row, the same
  behaviours and providers), of whose events only ``OrderPlaced`` is kept:
  the two status events are still built, then dropped before the unit of
  work commits (a few µs; no outbox row, no Kafka record);
- no saga and no other slice; the other methods answer UNIMPLEMENTED.

Example::

    wirebus serve e2e_place_order_app:app --app-dir bench
"""

from __future__ import annotations

from shop.orders.v1 import orders_pb2

from examples.shop.app import ShopProvider, log_with_correlation_id
from examples.shop.orders.handlers import place_order as shop_place_order
from examples.shop.orders.messages import OrderPlaced, OrderRef, PlaceOrder
from examples.shop.orders.store import OrderStore
from examples.shop.orders.store import metadata as orders_metadata
from wirebus import App, Context, Router, Validation

router = Router("orders")


@router.handler
async def place_order(cmd: PlaceOrder, orders: OrderStore, ctx: Context) -> OrderRef:
    ref = await shop_place_order(cmd, orders, ctx)
    ctx.events[:] = [e for e in ctx.events if type(e) is OrderPlaced]
    return ref


app = App(
    name="shop",  # the shop's name: the same ce_source and topics
    services=[orders_pb2],
    routers=[router],
    providers=[ShopProvider()],
    behaviours=[log_with_correlation_id],
    validation=Validation(),
    metadata=orders_metadata,
    events=[OrderPlaced],
    allow_unbound=True,
)
