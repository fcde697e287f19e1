"""The two events every status change of an order emits: a notification and a snapshot.

- :class:`~.messages.OrderStatusChanged` on ``shop.orders.v1.notifications``,
  key ``order_id``: ids and the new status only (consumers call back
  ``GetOrder`` for details);
- :class:`~.messages.OrderSnapshot` on ``shop.orders.v1.snapshots``, key
  ``order_id``: the whole order, for a compacted topic (latest per key wins).

Every handler that changes an order's status calls :func:`status_changed`
once the change is made, so both events are emitted for every change, in
the same transaction as the change.

Example::

    if await orders.move(order_id, OrderStatus.PAID, allowed_from=[OrderStatus.PENDING]):
        paid = await orders.get(order_id)
        status_changed(ctx, paid, at=dt.datetime.now(dt.UTC))
"""

from __future__ import annotations

import datetime as dt

from wirebus import Context

from .messages import OrderSnapshot, OrderStatusChanged, OrderView

__all__ = ["status_changed"]


def status_changed(ctx: Context, order: OrderView, *, at: dt.datetime) -> None:
    """Emit the notification and the snapshot of ``order`` (already in its new status)."""
    ctx.emit(OrderStatusChanged(order_id=order.order_id, status=order.status, changed_at=at))
    ctx.emit(OrderSnapshot(order=order, changed_at=at))
