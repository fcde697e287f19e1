"""Messages of the orders slice, bound to ``shop.orders.v1``."""

from __future__ import annotations

import datetime as dt
import enum

from shop.orders.v1 import orders_pb2

from wirebus import Command, Event, Message, Query


class OrderStatus(enum.Enum):
    """Mirrors ``shop.orders.v1.OrderStatus`` (matched by name, prefix stripped)."""

    PENDING = "pending"
    PAID = "paid"
    CANCELLED = "cancelled"


class LineItem(Message, proto=orders_pb2.LineItem):
    sku: str
    quantity: int
    price_cents: int


class OrderRef(Message, proto=orders_pb2.PlaceOrderResponse):
    order_id: str


class OrderView(Message, proto=orders_pb2.Order):
    order_id: str
    customer_id: str
    items: tuple[LineItem, ...]
    total_cents: int
    status: OrderStatus
    placed_at: dt.datetime


class PlaceOrder(Command[OrderRef], proto=orders_pb2.PlaceOrderRequest):
    customer_id: str
    items: tuple[LineItem, ...]


class GetOrder(Query[OrderView], proto=orders_pb2.GetOrderRequest):
    order_id: str


class CancelOrder(Command[None], proto=orders_pb2.CancelOrderRequest):
    order_id: str
    reason: str = ""


class ListOrders(Query[OrderView], proto=orders_pb2.ListOrdersRequest):
    customer_id: str


class OrderPlaced(Event, proto=orders_pb2.OrderPlaced, key="order_id"):
    order_id: str
    customer_id: str
    items: tuple[LineItem, ...]
    total_cents: int
    placed_at: dt.datetime


class OrderCancelled(Event, proto=orders_pb2.OrderCancelled, key="order_id"):
    order_id: str
    reason: str
    cancelled_at: dt.datetime


class OrdersImported(Message, proto=orders_pb2.ImportOrdersResponse):
    """What ``ImportOrders`` placed: how many orders, and their ids in the order sent."""

    imported: int
    order_ids: tuple[str, ...]


class WatchOrders(Message, proto=orders_pb2.WatchOrdersRequest):
    """Start watching ``order_id`` (or stop, with ``unwatch``)."""

    order_id: str
    unwatch: bool = False


class OrderStatusUpdate(Message, proto=orders_pb2.OrderStatusUpdate):
    order_id: str
    status: OrderStatus


class MarkOrderPaid(Command[None]):
    """In-process (the checkout saga's last step): a pending order becomes paid."""

    order_id: str


NOTIFICATIONS_TOPIC = "shop.orders.v1.notifications"
SNAPSHOTS_TOPIC = "shop.orders.v1.snapshots"  # compacted: the latest snapshot per order wins


class OrderStatusChanged(
    Event, proto=orders_pb2.OrderStatusChanged, topic=NOTIFICATIONS_TOPIC, key="order_id"
):
    """Notification: which order changed and its new status; call back GetOrder for more."""

    order_id: str
    status: OrderStatus
    changed_at: dt.datetime


class OrderSnapshot(
    Event,
    proto=orders_pb2.OrderSnapshot,
    topic=SNAPSHOTS_TOPIC,
    key="order.order_id",
    compacted=True,  # created with cleanup.policy=compact: the latest snapshot per order wins
):
    """Event-carried state transfer: the whole order after a change, keyed by its id."""

    order: OrderView
    changed_at: dt.datetime
