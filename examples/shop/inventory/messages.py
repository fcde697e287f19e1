"""Messages of the inventory slice (in-process commands: the checkout saga sends them)."""

from __future__ import annotations

from wirebus import Command


class ReserveStock(Command[None]):
    """Take the order's quantities from stock (idempotent per order)."""

    order_id: str
    items: tuple[tuple[str, int], ...]
    """``(sku, quantity)`` of each line."""


class ReleaseStock(Command[None]):
    """Give back what an order reserved (idempotent)."""

    order_id: str


class SetStock(Command[None]):
    """Set how many of a SKU are available (a SKU without stock is not limited)."""

    sku: str
    available: int


class GetStock(Command[int | None]):
    """How many of a SKU are available (``None``: not limited)."""

    sku: str
