"""Where the orders slice keeps its orders: the request's unit of work.

An order row and the OrderPlaced outbox row commit in one transaction (SQLite
by default, PostgreSQL when WIREBUS_DATABASE_URL says so). A new order is
added with ``UnitOfWork.insert``, so on PostgreSQL placing an order is one
statement (order row and outbox row together); reads and updates use the
unit of work's session.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from wirebus.outbox.uow import UnitOfWork

from .messages import LineItem, OrderStatus, OrderView

metadata = MetaData()

orders = Table(
    "shop_orders",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("order_id", String(64), nullable=False, unique=True),
    Column("customer_id", String(255), nullable=False, index=True),
    Column("items", Text, nullable=False),
    Column("total_cents", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("placed_at", DateTime(timezone=True), nullable=False),
)


# Built once: building a statement per call (``insert(orders).values(...)``)
# costs more CPU than executing it.
_BY_ID = select(orders).where(orders.c.order_id == bindparam("order_id"))
_MOVE_STATUS = (  # a transition: only from the states it is allowed from (no lost update)
    update(orders)
    .where(orders.c.order_id == bindparam("b_order_id"))
    .where(orders.c.status.in_(bindparam("b_from", expanding=True)))
    .values(status=bindparam("b_status"))
)
_STATUSES = select(orders.c.order_id, orders.c.status).where(
    orders.c.order_id.in_(bindparam("order_ids", expanding=True))
)
_BY_CUSTOMER = (
    select(orders).where(orders.c.customer_id == bindparam("customer_id")).order_by(orders.c.seq)
)


class OrderStore:
    """Orders of one request's transaction (Scope.REQUEST)."""

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    @property
    def session(self) -> AsyncSession:
        return self.uow.session

    async def add(self, order: OrderView) -> None:
        await self.uow.insert(
            orders,
            {
                "order_id": order.order_id,
                "customer_id": order.customer_id,
                "items": json.dumps([[i.sku, i.quantity, i.price_cents] for i in order.items]),
                "total_cents": order.total_cents,
                "status": order.status.name,
                "placed_at": order.placed_at,
            },
        )

    async def get(self, order_id: str) -> OrderView | None:
        row = (await self.session.execute(_BY_ID, {"order_id": order_id})).mappings().first()
        return None if row is None else _view(row)

    async def move(
        self, order_id: str, status: OrderStatus, *, allowed_from: Iterable[OrderStatus]
    ) -> bool:
        """Set ``status`` if the order is in one of ``allowed_from`` *when the row is written*.

        A read-then-write would lose an update: a payment captured while the order
        was being cancelled would read PENDING, and then overwrite CANCELLED with PAID.
        """
        result = await self.session.execute(
            _MOVE_STATUS,
            {
                "b_order_id": order_id,
                "b_status": status.name,
                "b_from": [s.name for s in allowed_from],
            },
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def by_customer(self, customer_id: str) -> list[OrderView]:
        result = await self.session.execute(_BY_CUSTOMER, {"customer_id": customer_id})
        return [_view(row) for row in result.mappings()]


async def statuses(session: AsyncSession, order_ids: Iterable[str]) -> dict[str, OrderStatus]:
    """The status of each of ``order_ids`` that exists (read on ``session``, not a call's)."""
    result = await session.execute(_STATUSES, {"order_ids": list(order_ids)})
    return {order_id: OrderStatus[status] for order_id, status in result}


def _view(row: object) -> OrderView:
    data = dict(row)  # type: ignore[call-overload]
    placed_at = data["placed_at"]
    if placed_at.tzinfo is None:  # SQLite returns naive datetimes
        placed_at = placed_at.replace(tzinfo=dt.UTC)
    return OrderView(
        order_id=data["order_id"],
        customer_id=data["customer_id"],
        items=tuple(
            LineItem(sku=s, quantity=q, price_cents=p) for s, q, p in json.loads(data["items"])
        ),
        total_cents=data["total_cents"],
        status=OrderStatus[data["status"]],
        placed_at=placed_at,
    )
