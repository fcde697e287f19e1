"""The shop's notification and state-transfer events on the real Kafka.

The shop runs as ``wirebus run`` runs it (PostgreSQL outbox, relay, real
Kafka; its consumers off, so the history of the shop's topics does not
matter): an order placed and cancelled puts ``OrderStatusChanged`` records on
``shop.orders.v1.notifications`` and ``OrderSnapshot`` records on
``shop.orders.v1.snapshots``, each keyed by the order id, with CloudEvents
headers, the snapshot decoding with the generated class. The snapshots topic
is compacted, created so by wirebus.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from shop.orders.v1 import orders_pb2

from examples.shop.app import app as shop_app
from examples.shop.orders.messages import (
    NOTIFICATIONS_TOPIC,
    SNAPSHOTS_TOPIC,
    CancelOrder,
    GetOrder,
    LineItem,
    OrderView,
    PlaceOrder,
)
from wirebus import Event
from wirebus.cloudevents import Attributes
from wirebus.codec import EventRegistry
from wirebus.kafka import KafkaConsumer, ensure_topics
from wirebus.runtime import Runtime
from wirebus.settings import Settings
from wirebus.testing import wait_until

pytestmark = pytest.mark.integration

ITEMS = (LineItem(sku="book", quantity=2, price_cents=1250),)


async def topic_config(bootstrap: str, topic: str, name: str) -> str | None:
    """The value of config ``name`` of ``topic``, as the broker describes it."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, configs={name: None})]
        )
    finally:
        await admin.close()
    for resource in response.resources:  # (error, message, type, name, [(name, value, ...)])
        for entry in resource[4]:
            if entry[0] == name:
                return str(entry[1])
    return None


class Tail:
    """The records written to some topics from now on (a plain consumer, no group)."""

    def __init__(self, bootstrap: str, topics: Sequence[str]) -> None:
        from aiokafka import AIOKafkaConsumer

        self.topics = list(topics)
        self.consumer = AIOKafkaConsumer(
            *topics, bootstrap_servers=bootstrap, enable_auto_commit=False
        )
        self.records: list[Any] = []

    async def start(self) -> None:
        from aiokafka import TopicPartition

        await self.consumer.start()
        partitions = [
            TopicPartition(t, p)
            for t in self.topics
            for p in self.consumer.partitions_for_topic(t) or ()
        ]
        self.consumer.unsubscribe()
        self.consumer.assign(partitions)
        await self.consumer.seek_to_end(*partitions)

    async def read(self, key: bytes, count: int, within: float = 60) -> list[Any]:
        """Records with ``key``, until ``count`` of them have come (fails after ``within``)."""

        async def enough() -> bool:
            for messages in (await self.consumer.getmany(timeout_ms=200)).values():
                self.records.extend(messages)
            return sum(r.key == key for r in self.records) >= count

        await wait_until(enough, within=within, interval=0)
        return [r for r in self.records if r.key == key]


async def test_a_compacted_events_topic_is_created_with_cleanup_policy_compact(
    bootstrap: str, fresh: str
) -> None:
    topic = f"{fresh}.snapshots"

    class Snapshot(
        Event, proto=orders_pb2.OrderSnapshot, topic=topic, key="order.order_id", compacted=True
    ):
        order: OrderView
        changed_at: dt.datetime

    registry = EventRegistry()
    registry.add(Snapshot)
    port = KafkaConsumer(
        bootstrap, group=fresh, topics=[topic], topic_configs=registry.topic_configs
    )
    await port.start()
    await port.stop()

    assert await topic_config(bootstrap, topic, "cleanup.policy") == "compact"


async def test_the_shop_publishes_a_notification_and_a_snapshot_per_change_keyed_by_order_id(
    pg_url: str, bootstrap: str
) -> None:
    settings = Settings(database_url=pg_url, kafka_bootstrap=bootstrap)
    await ensure_topics(
        bootstrap, [NOTIFICATIONS_TOPIC]
    )  # to tail it (the runtime makes the other)
    tail = Tail(bootstrap, [NOTIFICATIONS_TOPIC, SNAPSHOTS_TOPIC])
    async with Runtime(shop_app, settings, consume=False) as runtime:
        assert runtime.mediator is not None
        await tail.start()  # the runtime made the topics (the snapshots one compacted)
        try:
            ref = await runtime.mediator.send(
                PlaceOrder(customer_id=f"it-{uuid.uuid4().hex[:8]}", items=ITEMS)
            )
            await runtime.mediator.send(CancelOrder(order_id=ref.order_id, reason="test"))
            order = await runtime.mediator.send(GetOrder(order_id=ref.order_id))
            records = await tail.read(ref.order_id.encode(), 4)
        finally:
            await tail.consumer.stop()

    by_topic = {t: [r for r in records if r.topic == t] for t in tail.topics}
    notifications = [
        orders_pb2.OrderStatusChanged.FromString(r.value) for r in by_topic[NOTIFICATIONS_TOPIC]
    ]
    snapshots = [orders_pb2.OrderSnapshot.FromString(r.value) for r in by_topic[SNAPSHOTS_TOPIC]]
    statuses = [orders_pb2.ORDER_STATUS_PENDING, orders_pb2.ORDER_STATUS_CANCELLED]
    assert [n.status for n in notifications] == statuses
    assert [s.order.status for s in snapshots] == statuses
    assert {n.order_id for n in notifications} == {ref.order_id}
    assert snapshots[-1].order == order.proto()  # the whole order, as GetOrder reads it
    for record in records:
        attributes = Attributes.from_headers(record.headers)
        ce_type = "shop.orders.v1." + (
            "OrderStatusChanged" if record.topic == NOTIFICATIONS_TOPIC else "OrderSnapshot"
        )
        assert attributes.type == ce_type
        assert attributes.source == "shop"
        assert attributes.dataschema == f"type.googleapis.com/{ce_type}"
        assert dict(record.headers)["content-type"] == b"application/protobuf"
    assert await topic_config(bootstrap, SNAPSHOTS_TOPIC, "cleanup.policy") == "compact"
