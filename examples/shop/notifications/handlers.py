"""A consumer of a *notification* event: ids only, so it calls back for the details.

``OrderStatusChanged`` says which order changed and its new status, nothing
more. To write its notice, this slice asks the orders slice for the order
(``GetOrder`` through the mediator; another service would call the gateway's
``GetOrder`` over gRPC), so it always reads the order as it is now.

Example::

    async with app.mediator() as m:
        ref = await m.send(PlaceOrder(customer_id="c1", items=items))
        notices = await m.send(NoticesFor(customer_id="c1"))  # "order ... is pending: ..."
"""

from __future__ import annotations

import json

from sqlalchemy import BigInteger, Column, Integer, String, Table, Text, bindparam, select

from wirebus import Mediator, Message, Query, Router
from wirebus.outbox.uow import UnitOfWork

from ..orders.messages import GetOrder, OrderStatusChanged
from ..orders.store import metadata  # the shop's one schema; this slice owns its table

router = Router("notifications")

notices = Table(
    "shop_notices",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("order_id", String(64), nullable=False, index=True),
    Column("customer_id", String(255), nullable=False, index=True),
    Column("text", Text, nullable=False),
)
_FOR_CUSTOMER = (
    select(notices.c.order_id, notices.c.customer_id, notices.c.text)
    .where(notices.c.customer_id == bindparam("customer_id"))
    .order_by(notices.c.seq)
)


class Notice(Message):
    """One notice sent to a customer about an order."""

    order_id: str
    customer_id: str
    text: str


class NoticesFor(Query[tuple[Notice, ...]]):
    """The notices sent to a customer, oldest first (in-process only)."""

    customer_id: str


class NoticeStore:
    """Notices of one call's transaction (Scope.REQUEST)."""

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    async def add(self, notice: Notice) -> None:
        row = {"order_id": notice.order_id, "customer_id": notice.customer_id, "text": notice.text}
        await self.uow.insert(notices, row)

    async def for_customer(self, customer_id: str) -> tuple[Notice, ...]:
        result = await self.uow.session.execute(_FOR_CUSTOMER, {"customer_id": customer_id})
        return tuple(Notice(**row) for row in result.mappings())


@router.handler
async def notify_customer(
    event: OrderStatusChanged, mediator: Mediator, store: NoticeStore
) -> None:
    order = await mediator.send(GetOrder(order_id=event.order_id))  # the call back
    items = json.dumps([i.sku for i in order.items])
    text = (
        f"order {order.order_id} is {event.status.value}:"
        f" {items}, {order.total_cents} cents in total"
    )
    await store.add(Notice(order_id=order.order_id, customer_id=order.customer_id, text=text))


@router.handler
async def notices_for(query: NoticesFor, store: NoticeStore) -> tuple[Notice, ...]:
    return await store.for_customer(query.customer_id)
