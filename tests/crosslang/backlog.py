"""A backlog on fresh topics, for the languages' consumers to wait through.

A consumer that reads the shop's topics from the start on a broker that has served
other runs meets thousands of other orders' events before its own, and its order's
events in any order across the two topics (``OrderCancelled`` can come before
``PaymentCaptured``). ``seed_backlog`` reproduces that on two fresh one-partition
topics, deterministically, so that a consumer that stops early fails every time::

    orders topic    K OrderCancelled | other orders' OrderPlaced, a record without
                    ce_type, one without a key, K's ce_type on another key | K OrderPlaced
    payments topic  other orders' PaymentCaptured | K PaymentCaptured | more others

(K is the backlog's order id; K's PaymentCaptured is written before its OrderPlaced.)
A consumer passes if it returns exactly K's OrderPlaced and K's PaymentCaptured,
whose values say ``customer_id == Backlog.customer_id`` and
``amount_cents == total_cents``; every other record carries other values.

The languages get the backlog through ``Backlog.env()``:
``WIREBUS_BACKLOG_ORDERS_TOPIC``, ``WIREBUS_BACKLOG_PAYMENTS_TOPIC``,
``WIREBUS_BACKLOG_ORDER_ID``, ``WIREBUS_BACKLOG_CUSTOMER_ID``,
``WIREBUS_BACKLOG_TOTAL_CENTS``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from shop.orders.v1 import orders_pb2
from shop.payments.v1 import payments_pb2

from wirebus.cloudevents import Attributes

OTHER_ORDERS = 25  # other orders' events before and around the wanted ones
TOTAL_CENTS = 4321


@dataclasses.dataclass(frozen=True)
class Backlog:
    """Two fresh topics holding a backlog around the events of one order."""

    orders_topic: str
    payments_topic: str
    order_id: str
    customer_id: str
    total_cents: int = TOTAL_CENTS

    def env(self) -> dict[str, str]:
        """The environment variables a language's backlog test reads."""
        return {
            "WIREBUS_BACKLOG_ORDERS_TOPIC": self.orders_topic,
            "WIREBUS_BACKLOG_PAYMENTS_TOPIC": self.payments_topic,
            "WIREBUS_BACKLOG_ORDER_ID": self.order_id,
            "WIREBUS_BACKLOG_CUSTOMER_ID": self.customer_id,
            "WIREBUS_BACKLOG_TOTAL_CENTS": str(self.total_cents),
        }


Record = tuple[str, bytes | None, Message, str | None]  # topic, key, message, ce_type


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(dt.datetime.now(dt.UTC))
    return stamp


def _placed(order_id: str, customer_id: str, total: int) -> orders_pb2.OrderPlaced:
    item = orders_pb2.LineItem(sku="backlog", quantity=1, price_cents=total)
    return orders_pb2.OrderPlaced(
        order_id=order_id,
        customer_id=customer_id,
        items=[item],
        total_cents=total,
        placed_at=_now(),
    )


def _captured(order_id: str, amount: int) -> payments_pb2.PaymentCaptured:
    return payments_pb2.PaymentCaptured(
        payment_id=str(uuid.uuid4()), order_id=order_id, amount_cents=amount, captured_at=_now()
    )


def backlog_records(backlog: Backlog) -> list[Record]:
    """The records of the backlog, in the order they are written."""
    orders, payments, key = backlog.orders_topic, backlog.payments_topic, backlog.order_id
    placed_type = orders_pb2.OrderPlaced.DESCRIPTOR.full_name
    captured_type = payments_pb2.PaymentCaptured.DESCRIPTOR.full_name
    cancelled = orders_pb2.OrderCancelled(order_id=key, reason="backlog", cancelled_at=_now())
    records: list[Record] = [
        (orders, key.encode(), cancelled, orders_pb2.OrderCancelled.DESCRIPTOR.full_name)
    ]
    for n in range(OTHER_ORDERS):
        other = f"other-{n}-{uuid.uuid4()}"
        records.append((orders, other.encode(), _placed(other, f"other-{n}", n + 1), placed_type))
        records.append((payments, other.encode(), _captured(other, n + 1), captured_type))
        if n == OTHER_ORDERS // 2:  # the wanted payment, before the wanted order
            records.append(
                (payments, key.encode(), _captured(key, backlog.total_cents), captured_type)
            )
    decoy = _placed(key, "decoy", 1)
    records += [
        (orders, key.encode(), decoy, None),  # no ce_type: not an event of the order
        (orders, None, decoy, placed_type),  # no key
        (orders, b"not-" + key.encode(), decoy, placed_type),  # another key
        (orders, key.encode(), _placed(key, backlog.customer_id, backlog.total_cents), placed_type),
    ]
    return records


def _headers(ce_type: str | None) -> list[tuple[str, bytes]]:
    if ce_type is None:
        return [("content-type", b"application/protobuf")]
    attributes = Attributes.new(
        source="shop", type=ce_type, dataschema=f"type.googleapis.com/{ce_type}"
    )
    return attributes.headers()


async def _seed(bootstrap: str, backlog: Backlog) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = (backlog.orders_topic, backlog.payments_topic)
        await admin.create_topics(
            [NewTopic(t, num_partitions=1, replication_factor=1) for t in topics]
        )
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for topic, key, message, ce_type in backlog_records(backlog):
            # one at a time: each record is on the log before the next is sent
            await producer.send_and_wait(
                topic, message.SerializeToString(), key=key, headers=_headers(ce_type)
            )
    finally:
        await producer.stop()


def seed_backlog(bootstrap: str, name: str) -> Backlog:
    """Create ``<name>-<hex>.orders`` and ``.payments`` and write the backlog on them."""
    fresh = f"{name}-{uuid.uuid4().hex[:10]}"
    backlog = Backlog(
        orders_topic=f"{fresh}.orders",
        payments_topic=f"{fresh}.payments",
        order_id=str(uuid.uuid4()),
        customer_id=f"{fresh}-customer",
    )
    asyncio.run(_seed(bootstrap, backlog))
    return backlog
