"""Handlers of the inventory slice: reserve, release and set stock."""

from __future__ import annotations

from collections import Counter

from wirebus import FailedPrecondition, Router

from .messages import GetStock, ReleaseStock, ReserveStock, SetStock
from .store import StockStore

router = Router("inventory")


@router.handler
async def reserve_stock(cmd: ReserveStock, stock: StockStore) -> None:
    if await stock.reserved(cmd.order_id):
        return  # reserved already (a step run again after a crash)
    wanted: Counter[str] = Counter()
    for sku, quantity in cmd.items:
        wanted[sku] += quantity
    for sku, quantity in sorted(wanted.items()):  # one lock order: no deadlock between orders
        if not await stock.take(sku, quantity):
            raise FailedPrecondition(
                f"only {await stock.available(sku)} of {sku!r} in stock, {quantity} wanted",
                reason="OUT_OF_STOCK",
                metadata={"sku": sku},
            )
        await stock.reserve(cmd.order_id, sku, quantity)


@router.handler
async def release_stock(cmd: ReleaseStock, stock: StockStore) -> None:
    await stock.release(cmd.order_id)


@router.handler
async def set_stock(cmd: SetStock, stock: StockStore) -> None:
    await stock.set(cmd.sku, cmd.available)


@router.handler
async def get_stock(query: GetStock, stock: StockStore) -> int | None:
    return await stock.available(query.sku)
