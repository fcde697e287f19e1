"""A consumer of an *event-carried state transfer* event: it needs no call back.

``OrderSnapshot`` carries the whole order after each change. This slice keeps
its own copy of every order in its own table, overwriting the row with each
snapshot: the latest snapshot of an order wins, as on the compacted topic the
snapshots travel on (key ``order_id``: one order's snapshots stay in order on
one partition). A snapshot older than the copy (``changed_at``: a redelivery,
a replay from the start of the topic, or the depth-first order of in-process
delivery) is ignored. It never asks the orders slice anything, and keeps
answering while that slice is down.

Example::

    async with app.mediator() as m:
        ref = await m.send(PlaceOrder(customer_id="c1", items=items))
        copy = await m.send(ReplicatedOrder(order_id=ref.order_id))  # an OrderView
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, String, Table, Text, bindparam, select, update

from wirebus import Query, Router
from wirebus.outbox.uow import UnitOfWork

from ..orders.messages import LineItem, OrderSnapshot, OrderStatus, OrderView
from ..orders.store import metadata  # the shop's one schema; this slice owns its table

router = Router("replica")

replica = Table(
    "shop_order_replica",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("customer_id", String(255), nullable=False),
    Column("items", Text, nullable=False),
    Column("total_cents", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("placed_at", DateTime(timezone=True), nullable=False),
    Column("changed_at", DateTime(timezone=True), nullable=False),
)
_BY_ID = select(replica).where(replica.c.order_id == bindparam("order_id"))
_KNOWN = select(replica.c.order_id).where(replica.c.order_id == bindparam("order_id"))
_OVERWRITE = (  # only with a snapshot at least as new as the copy
    update(replica)
    .where(replica.c.order_id == bindparam("b_order_id"))
    .where(replica.c.changed_at <= bindparam("b_changed_at"))
    .values(
        customer_id=bindparam("customer_id"),
        items=bindparam("items"),
        total_cents=bindparam("total_cents"),
        status=bindparam("status"),
        placed_at=bindparam("placed_at"),
        changed_at=bindparam("b_changed_at"),
    )
)


class ReplicatedOrder(Query[OrderView | None]):
    """This slice's copy of an order (``None``: no snapshot of it yet); in-process only."""

    order_id: str


class ReplicaStore:
    """The replica table in one call's transaction (Scope.REQUEST)."""

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    async def upsert(self, order: OrderView, changed_at: dt.datetime) -> bool:
        """Overwrite this order's row unless it is newer (insert it the first time).

        Returns whether ``order`` is now the copy.
        """
        values = _row(order)
        session = self.uow.session
        params = {"b_order_id": order.order_id, "b_changed_at": changed_at, **values}
        if (await session.execute(_OVERWRITE, params)).rowcount:  # type: ignore[attr-defined]
            return True
        if (await session.execute(_KNOWN, {"order_id": order.order_id})).first() is not None:
            return False  # the copy is newer: this snapshot is stale
        row = {"order_id": order.order_id, "changed_at": changed_at, **values}
        await session.execute(replica.insert(), row)
        return True

    async def get(self, order_id: str) -> OrderView | None:
        row = (await self.uow.session.execute(_BY_ID, {"order_id": order_id})).mappings().first()
        return None if row is None else _view(dict(row))


def _row(order: OrderView) -> dict[str, Any]:
    return {
        "customer_id": order.customer_id,
        "items": json.dumps([[i.sku, i.quantity, i.price_cents] for i in order.items]),
        "total_cents": order.total_cents,
        "status": order.status.name,
        "placed_at": order.placed_at,
    }


def _view(row: dict[str, Any]) -> OrderView:
    placed_at = row["placed_at"]
    if placed_at.tzinfo is None:  # SQLite returns naive datetimes
        placed_at = placed_at.replace(tzinfo=dt.UTC)
    return OrderView(
        order_id=row["order_id"],
        customer_id=row["customer_id"],
        items=tuple(
            LineItem(sku=s, quantity=q, price_cents=p) for s, q, p in json.loads(row["items"])
        ),
        total_cents=row["total_cents"],
        status=OrderStatus[row["status"]],
        placed_at=placed_at,
    )


@router.handler
async def keep_copy(event: OrderSnapshot, store: ReplicaStore) -> None:
    await store.upsert(event.order, event.changed_at)


@router.handler
async def replicated_order(query: ReplicatedOrder, store: ReplicaStore) -> OrderView | None:
    return await store.get(query.order_id)
