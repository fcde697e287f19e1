"""Handlers of the orders slice."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator

from wirebus import Context, FailedPrecondition, FieldViolation, InvalidArgument, NotFound, Router

from ..payments.messages import PaymentCaptured
from .changes import status_changed
from .messages import (
    CancelOrder,
    GetOrder,
    ListOrders,
    OrderCancelled,
    OrderPlaced,
    OrderRef,
    OrderStatus,
    OrderView,
    PlaceOrder,
)
from .store import OrderStore

router = Router("orders")

INT64_MAX = 2**63 - 1  # the orders table's total_cents column


def _total(cmd: PlaceOrder) -> int:
    """The order's total; InvalidArgument on ``items`` when it does not fit in int64.

    Every rule of one field (ids non-empty, customer_id of at most 255
    characters and no NUL, at least one item, quantity >= 1, price >= 0) is a
    ``buf.validate`` annotation in orders.proto, checked by the app's
    Validation stage before this handler runs. The total is a rule across
    fields and items (a sum of products), which is the domain's business, not
    a field annotation's: it stays here.
    """
    total = sum(i.quantity * i.price_cents for i in cmd.items)
    if total > INT64_MAX:
        raise InvalidArgument(
            "the order is not valid",
            violations=[FieldViolation("items", f"the order total must be at most {INT64_MAX}")],
        )
    return total


@router.handler
async def place_order(cmd: PlaceOrder, orders: OrderStore, ctx: Context) -> OrderRef:
    total = _total(cmd)
    order = OrderView(
        order_id=str(uuid.uuid4()),
        customer_id=cmd.customer_id,
        items=cmd.items,
        total_cents=total,
        status=OrderStatus.PENDING,
        placed_at=dt.datetime.now(dt.UTC),
    )
    await orders.add(order)
    ctx.emit(
        OrderPlaced(
            order_id=order.order_id,
            customer_id=order.customer_id,
            items=order.items,
            total_cents=order.total_cents,
            placed_at=order.placed_at,
        )
    )
    status_changed(ctx, order, at=order.placed_at)
    return OrderRef(order_id=order.order_id)


async def _existing(orders: OrderStore, order_id: str) -> OrderView:
    order = await orders.get(order_id)
    if order is None:
        raise NotFound(
            f"order {order_id!r} does not exist",
            reason="ORDER_NOT_FOUND",
            metadata={"order_id": order_id},
        )
    return order


@router.handler
async def get_order(query: GetOrder, orders: OrderStore) -> OrderView:
    return await _existing(orders, query.order_id)


@router.handler
async def cancel_order(cmd: CancelOrder, orders: OrderStore, ctx: Context) -> None:
    order = await _existing(orders, cmd.order_id)
    live = (s for s in OrderStatus if s is not OrderStatus.CANCELLED)
    if not await orders.move(order.order_id, OrderStatus.CANCELLED, allowed_from=live):
        raise FailedPrecondition(
            f"order {cmd.order_id!r} is already cancelled",
            reason="ORDER_ALREADY_CANCELLED",
            metadata={"order_id": cmd.order_id},
        )
    cancelled_at = dt.datetime.now(dt.UTC)
    ctx.emit(OrderCancelled(order_id=order.order_id, reason=cmd.reason, cancelled_at=cancelled_at))
    status_changed(ctx, dataclasses.replace(order, status=OrderStatus.CANCELLED), at=cancelled_at)


@router.handler
async def list_orders(query: ListOrders, orders: OrderStore) -> AsyncIterator[OrderView]:
    for order in await orders.by_customer(query.customer_id):
        yield order


@router.handler
async def mark_paid(event: PaymentCaptured, orders: OrderStore, ctx: Context) -> None:
    # only a pending order becomes paid: not one cancelled meanwhile
    if await orders.move(event.order_id, OrderStatus.PAID, allowed_from=[OrderStatus.PENDING]):
        paid = await orders.get(event.order_id)
        if paid is not None:
            status_changed(ctx, paid, at=dt.datetime.now(dt.UTC))
