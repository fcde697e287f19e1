"""The shop's order status moves only along allowed transitions, even when two run at once.

A read-then-write lost an update: the payments slice read an order as PENDING,
a cancel committed, then the payment wrote PAID over CANCELLED, and a second
cancel "succeeded" (seen once in ~10 ``make demo`` runs on a loaded machine).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from examples.shop.orders.messages import OrderStatus, OrderView
from examples.shop.orders.store import OrderStore, orders
from examples.shop.orders.store import metadata as orders_metadata
from wirebus.db import Database


@dataclasses.dataclass
class Session:
    """What ``OrderStore`` needs of a unit of work, for reads and status moves."""

    session: AsyncSession


async def test_a_payment_read_before_a_cancel_does_not_overwrite_it(tmp_path: Path) -> None:
    database = Database(
        f"sqlite+aiosqlite:///{tmp_path}/shop.db", schema="create", extra_metadata=[orders_metadata]
    )
    await database.start()
    try:
        async with database.session() as setup, setup.begin():
            await setup.execute(
                orders.insert().values(
                    order_id="o-1",
                    customer_id="alice",
                    items="[]",
                    total_cents=1,
                    status=OrderStatus.PENDING.name,
                    placed_at=dt.datetime.now(dt.UTC),
                )
            )
        async with database.session() as paying:
            payments = OrderStore(Session(paying))  # type: ignore[arg-type]
            seen = await payments.get("o-1")
            assert seen is not None
            assert seen.status is OrderStatus.PENDING  # what the payment handler saw
            await paying.commit()

            async with database.session() as cancelling:
                cancels = OrderStore(Session(cancelling))  # type: ignore[arg-type]
                live = [s for s in OrderStatus if s is not OrderStatus.CANCELLED]
                assert await cancels.move("o-1", OrderStatus.CANCELLED, allowed_from=live)
                await cancelling.commit()
                assert not await cancels.move("o-1", OrderStatus.CANCELLED, allowed_from=live)

            paid = await payments.move("o-1", OrderStatus.PAID, allowed_from=[OrderStatus.PENDING])
            await paying.commit()
            assert not paid
            after = await payments.get("o-1")
            assert isinstance(after, OrderView)
            assert after.status is OrderStatus.CANCELLED
    finally:
        await database.close()
