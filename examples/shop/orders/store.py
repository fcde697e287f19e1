"""Where the orders slice keeps its orders (in memory in this example)."""

from __future__ import annotations

import dataclasses

from .messages import OrderView


class OrderStore:
    """Orders by id, in insertion order; one instance per app (Scope.APP)."""

    def __init__(self) -> None:
        self._orders: dict[str, OrderView] = {}

    async def add(self, order: OrderView) -> None:
        self._orders[order.order_id] = order

    async def get(self, order_id: str) -> OrderView | None:
        return self._orders.get(order_id)

    async def replace(self, order: OrderView, **changes: object) -> OrderView:
        updated = dataclasses.replace(order, **changes)  # type: ignore[arg-type]
        self._orders[order.order_id] = updated
        return updated

    async def by_customer(self, customer_id: str) -> list[OrderView]:
        return [o for o in self._orders.values() if o.customer_id == customer_id]
