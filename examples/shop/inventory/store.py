"""Stock and reservations, on the request's unit of work (the shop's one ``MetaData``).

A SKU with no ``shop_stock`` row is not limited (the example sells anything);
one with a row is reserved with a conditional update, so two orders never
take the same last item.
"""

from __future__ import annotations

from sqlalchemy import Column, Integer, String, Table, bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from wirebus.outbox.uow import UnitOfWork

from ..orders.store import metadata

stock = Table(
    "shop_stock",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("available", Integer, nullable=False),
)

reservations = Table(
    "shop_reservations",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("sku", String(64), primary_key=True),
    Column("quantity", Integer, nullable=False),
)

_AVAILABLE = select(stock.c.available).where(stock.c.sku == bindparam("b_sku"))
_TAKE = (
    update(stock)
    .where(stock.c.sku == bindparam("b_sku"))
    .where(stock.c.available >= bindparam("b_quantity"))
    .values(available=stock.c.available - bindparam("b_quantity"))
)
_GIVE = (
    update(stock)
    .where(stock.c.sku == bindparam("b_sku"))
    .values(available=stock.c.available + bindparam("b_quantity"))
)
_RESERVED = select(reservations.c.sku, reservations.c.quantity).where(
    reservations.c.order_id == bindparam("b_order_id")
)
_RESERVE = insert(reservations)
_FORGET = delete(reservations).where(reservations.c.order_id == bindparam("b_order_id"))


class StockStore:
    """Stock of one request's transaction (Scope.REQUEST)."""

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    @property
    def session(self) -> AsyncSession:
        return self.uow.session

    async def available(self, sku: str) -> int | None:
        return (await self.session.execute(_AVAILABLE, {"b_sku": sku})).scalar_one_or_none()

    async def set(self, sku: str, available: int) -> None:
        updated = await self.session.execute(
            update(stock).where(stock.c.sku == sku).values(available=available)
        )
        if not updated.rowcount:  # type: ignore[attr-defined]
            await self.session.execute(insert(stock).values(sku=sku, available=available))

    async def reserved(self, order_id: str) -> list[tuple[str, int]]:
        result = await self.session.execute(_RESERVED, {"b_order_id": order_id})
        return [(sku, quantity) for sku, quantity in result.all()]

    async def take(self, sku: str, quantity: int) -> bool:
        """Take ``quantity`` if that many are available (or the SKU is not limited)."""
        if await self.available(sku) is None:
            return True
        result = await self.session.execute(_TAKE, {"b_sku": sku, "b_quantity": quantity})
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def reserve(self, order_id: str, sku: str, quantity: int) -> None:
        await self.session.execute(
            _RESERVE, {"order_id": order_id, "sku": sku, "quantity": quantity}
        )

    async def release(self, order_id: str) -> list[tuple[str, int]]:
        """Give back what ``order_id`` reserved and forget the reservation."""
        given = await self.reserved(order_id)
        for sku, quantity in given:
            await self.session.execute(_GIVE, {"b_sku": sku, "b_quantity": quantity})
        await self.session.execute(_FORGET, {"b_order_id": order_id})
        return given
