"""The shop's two event styles: a notification (ids only) and a state transfer (the order).

Every status change of an order (placed, paid, cancelled) emits
``OrderStatusChanged`` on ``shop.orders.v1.notifications`` and
``OrderSnapshot`` on the compacted ``shop.orders.v1.snapshots``, both keyed by
the order id. The notifications slice calls back ``GetOrder`` for what the
notification does not carry; the replica slice keeps its own copy from the
snapshots alone, the latest one winning.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

import pytest
from shop.orders.v1 import orders_pb2

from examples.shop.app import app as shop_app
from examples.shop.notifications.handlers import NoticesFor
from examples.shop.orders.messages import (
    NOTIFICATIONS_TOPIC,
    SNAPSHOTS_TOPIC,
    CancelOrder,
    GetOrder,
    LineItem,
    OrderSnapshot,
    OrderStatus,
    OrderStatusChanged,
    PlaceOrder,
)
from examples.shop.replica.handlers import ReplicatedOrder
from wirebus import ConfigurationError, Event
from wirebus.codec import EventRegistry
from wirebus.testing import AppHarness

ITEMS = (
    LineItem(sku="book", quantity=2, price_cents=1250),
    LineItem(sku="pen", quantity=3, price_cents=199),
)


async def test_every_status_change_is_a_notification_and_a_snapshot_keyed_by_order_id() -> None:
    async with AppHarness(shop_app) as shop:
        ref = await shop.send(PlaceOrder(customer_id="c1", items=ITEMS))
        await shop.idle()  # paid by the payments slice
        await shop.send(CancelOrder(order_id=ref.order_id))
        await shop.idle()
        order = await shop.send(GetOrder(order_id=ref.order_id))
        notifications = shop.published(OrderStatusChanged)
        snapshots = shop.published(OrderSnapshot)

    statuses = [OrderStatus.PENDING, OrderStatus.PAID, OrderStatus.CANCELLED]
    assert [n.event.status for n in notifications] == statuses
    assert [s.event.order.status for s in snapshots] == statuses
    for published in (*notifications, *snapshots):
        assert published.record.topic in (NOTIFICATIONS_TOPIC, SNAPSHOTS_TOPIC)
        assert published.record.key == ref.order_id.encode()
    assert {n.record.topic for n in notifications} == {NOTIFICATIONS_TOPIC}
    assert {s.record.topic for s in snapshots} == {SNAPSHOTS_TOPIC}
    assert notifications[0].attributes.type == "shop.orders.v1.OrderStatusChanged"
    assert snapshots[-1].event.order == order  # the whole order, as GetOrder reads it
    assert [s.event.changed_at for s in snapshots] == [n.event.changed_at for n in notifications]


async def test_the_notification_consumer_calls_back_get_order_for_the_details() -> None:
    async with shop_app.mediator() as m:
        ref = await m.send(PlaceOrder(customer_id="c1", items=ITEMS))
        await m.send(CancelOrder(order_id=ref.order_id))
        notices = await m.send(NoticesFor(customer_id="c1"))

    # the skus and the total are not in OrderStatusChanged: read back with GetOrder
    assert [n.text.split(":")[0] for n in notices] == [
        f"order {ref.order_id} is {status}" for status in ("paid", "pending", "cancelled")
    ]
    assert all('["book", "pen"], 3097 cents in total' in n.text for n in notices)
    assert {(n.order_id, n.customer_id) for n in notices} == {(ref.order_id, "c1")}


async def test_the_replica_converges_to_the_latest_state_of_each_order() -> None:
    async with shop_app.mediator() as m:
        kept = await m.send(PlaceOrder(customer_id="c1", items=ITEMS))
        cancelled = await m.send(PlaceOrder(customer_id="c2", items=ITEMS[:1]))
        await m.send(CancelOrder(order_id=cancelled.order_id))

        for ref, status in ((kept, OrderStatus.PAID), (cancelled, OrderStatus.CANCELLED)):
            copy = await m.send(ReplicatedOrder(order_id=ref.order_id))
            assert copy == await m.send(GetOrder(order_id=ref.order_id))
            assert copy is not None
            assert copy.status is status
        assert await m.send(ReplicatedOrder(order_id="no-such-order")) is None


async def test_a_snapshot_older_than_the_replicas_copy_is_ignored() -> None:
    async with AppHarness(shop_app) as shop:
        ref = await shop.send(PlaceOrder(customer_id="c1", items=ITEMS))
        await shop.idle()
        paid = await shop.send(GetOrder(order_id=ref.order_id))
        [*_, latest] = shop.published(OrderSnapshot)
        stale = OrderSnapshot(
            order=dataclasses.replace(paid, status=OrderStatus.PENDING),
            changed_at=latest.event.changed_at - dt.timedelta(seconds=1),
        )
        await shop.handled(await shop.deliver(stale))  # a redelivery, a replay
        copy = await shop.send(ReplicatedOrder(order_id=ref.order_id))

    assert paid.status is OrderStatus.PAID
    assert copy == paid


def test_describe_shows_each_events_topic_key_and_where_the_topic_comes_from() -> None:
    text = shop_app.describe()

    assert (
        f"  {NOTIFICATIONS_TOPIC}: shop.orders.v1.OrderStatusChanged"
        f" (dlq {NOTIFICATIONS_TOPIC}.dlq), key order_id, topic declared\n"
    ) in text
    assert (
        f"  {SNAPSHOTS_TOPIC}: shop.orders.v1.OrderSnapshot (dlq {SNAPSHOTS_TOPIC}.dlq),"
        " key order.order_id, topic declared, compacted\n"
    ) in text
    assert (
        "  shop.orders.v1: shop.orders.v1.OrderPlaced (dlq shop.orders.v1.dlq),"
        " key order_id, topic from the proto package\n"
    ) in text


def test_only_compacted_topics_have_a_config_to_create_them_with() -> None:
    registry = shop_app.registry()

    assert registry.topic_configs == {SNAPSHOTS_TOPIC: {"cleanup.policy": "compact"}}


def test_a_dotted_key_reads_a_field_of_a_nested_message() -> None:
    kind = EventRegistry().add(OrderSnapshot)
    order = orders_pb2.Order(order_id="o-7", status=orders_pb2.ORDER_STATUS_PAID)
    snapshot = OrderSnapshot.from_proto(orders_pb2.OrderSnapshot(order=order))

    assert kind.key_bytes(snapshot) == b"o-7"


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("order", "names the message shop.orders.v1.Order: name a field inside it"),
        ("order.nope", "names no field of shop.orders.v1.Order ('nope')"),
        ("order.order_id.more", "goes inside 'more', which is not a message"),
    ],
)
def test_a_dotted_key_must_end_at_a_scalar_field_of_the_proto(key: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(f"key={key!r} {problem}")):

        class Snapshot(Event, proto=orders_pb2.OrderSnapshot, key=key):  # type: ignore[call-arg]
            order: orders_pb2.Order
            changed_at: dt.datetime


def test_a_compacted_event_must_declare_its_key() -> None:
    with pytest.raises(ConfigurationError, match="compacted=True keeps the latest record per key"):

        class Snapshot(Event, proto=orders_pb2.OrderSnapshot, compacted=True):  # type: ignore[call-arg]
            order: orders_pb2.Order
            changed_at: dt.datetime
