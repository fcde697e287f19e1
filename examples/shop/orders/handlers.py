"""Handlers of the orders slice."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator

from wirebus import Context, FailedPrecondition, FieldViolation, InvalidArgument, NotFound, Router
from wirebus.db import Database

from .changes import status_changed
from .messages import (
    CancelOrder,
    GetOrder,
    ListOrders,
    MarkOrderPaid,
    OrderCancelled,
    OrderPlaced,
    OrderRef,
    OrdersImported,
    OrderStatus,
    OrderStatusUpdate,
    OrderView,
    PlaceOrder,
    WatchOrders,
)
from .store import OrderStore, statuses

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
async def mark_paid(cmd: MarkOrderPaid, orders: OrderStore, ctx: Context) -> None:
    # only a pending order becomes paid: not one cancelled meanwhile
    if await orders.move(cmd.order_id, OrderStatus.PAID, allowed_from=[OrderStatus.PENDING]):
        paid = await orders.get(cmd.order_id)
        if paid is not None:
            status_changed(ctx, paid, at=dt.datetime.now(dt.UTC))
    else:
        order = await _existing(orders, cmd.order_id)
        if order.status is not OrderStatus.PAID:  # paid already: a step run again
            raise FailedPrecondition(
                f"order {cmd.order_id!r} is {order.status.name.lower()}, not pending",
                reason="ORDER_NOT_PENDING",
                metadata={"order_id": cmd.order_id},
            )


# ---------------------------------------------------------------- streams of requests

WATCH_POLL_SECONDS = 0.2
"""How often ``WatchOrders`` reads the statuses of the orders it watches."""
MAX_WATCHED_ORDERS = 100
"""The most orders one ``WatchOrders`` call watches at a time (each poll reads them all)."""


MAX_IMPORT_ORDERS = 1_000
"""The most orders one ``ImportOrders`` call may hold (its one transaction stays bounded)."""


@router.handler
async def import_orders(
    cmds: AsyncIterator[PlaceOrder], orders: OrderStore, ctx: Context
) -> OrdersImported:
    """Place every order the client streams, in the call's one transaction: all or none.

    The orders are read first (the Validation stage checks each one as it
    is read) and written once the client has sent them all, so no
    transaction is open -- on SQLite, no write lock held -- while a slow
    client streams. The unit of work commits when this returns; an invalid
    order, more than ``MAX_IMPORT_ORDERS``, a failure or a cancelled call
    leaves no order and no OrderPlaced.
    """
    received: list[PlaceOrder] = []
    async for cmd in cmds:
        if len(received) == MAX_IMPORT_ORDERS:
            raise InvalidArgument(
                f"an import holds at most {MAX_IMPORT_ORDERS} orders",
                reason="IMPORT_TOO_LARGE",
                metadata={"max_orders": str(MAX_IMPORT_ORDERS)},
            )
        received.append(cmd)
    ids = [(await place_order(cmd, orders, ctx)).order_id for cmd in received]
    return OrdersImported(imported=len(ids), order_ids=tuple(ids))


@router.handler
async def watch_orders(
    requests: AsyncIterator[WatchOrders], database: Database
) -> AsyncIterator[OrderStatusUpdate]:
    """The status of each watched order, then each change, until the client closes its side.

    Requests are read by a task of their own while the statuses are polled
    (every ``WATCH_POLL_SECONDS``, and at once when a request arrives), each
    time in a short read transaction of its own: a watch holds no database
    connection between polls, and it sees every status change whatever
    process made it (the payments consumer, another gateway), which
    reacting to this process's own events would not.
    """
    watched: dict[str, OrderStatus | None] = {}  # order id -> the status last sent
    arrived = asyncio.Event()

    async def read() -> None:
        try:
            async for request in requests:
                if request.unwatch:
                    watched.pop(request.order_id, None)
                elif request.order_id not in watched:
                    if len(watched) == MAX_WATCHED_ORDERS:
                        raise InvalidArgument(
                            f"a watch follows at most {MAX_WATCHED_ORDERS} orders at a time",
                            reason="TOO_MANY_WATCHED",
                            metadata={"max_orders": str(MAX_WATCHED_ORDERS)},
                        )
                    watched[request.order_id] = None
                arrived.set()
        finally:
            arrived.set()  # the client closed its side (or the read failed): look once more

    reader = asyncio.ensure_future(read())
    try:
        while True:
            closed = reader.done()  # before the poll: the poll then saw every request
            arrived.clear()
            async for update in _changes(database, watched):
                yield update
            if closed:
                reader.result()  # a request that failed (invalid, say) fails the call
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WATCH_POLL_SECONDS):
                    await arrived.wait()
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


async def _changes(
    database: Database, watched: dict[str, OrderStatus | None]
) -> AsyncIterator[OrderStatusUpdate]:
    """Updates of the watched orders whose status is not the one last sent (NotFound if gone)."""
    order_ids = list(watched)
    if not order_ids:
        return
    async with database.session() as session:
        found = await statuses(session, order_ids)
    for order_id in order_ids:
        if order_id not in watched:  # unwatched meanwhile
            continue
        status = found.get(order_id)
        if status is None:
            raise NotFound(
                f"order {order_id!r} does not exist",
                reason="ORDER_NOT_FOUND",
                metadata={"order_id": order_id},
            )
        if status is not watched[order_id]:
            watched[order_id] = status
            yield OrderStatusUpdate(order_id=order_id, status=status)
