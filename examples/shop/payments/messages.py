"""Messages of the payments slice, bound to ``shop.payments.v1``.

``CapturePayment`` is a command that travels over Kafka (the checkout saga
sends it through the outbox); in wirebus a travelling message is an
``Event`` subclass, handled by an event handler.
"""

from __future__ import annotations

import datetime as dt

from shop.payments.v1 import payments_pb2

from wirebus import Event


class PaymentCaptured(Event, proto=payments_pb2.PaymentCaptured, key="order_id"):
    payment_id: str
    order_id: str
    amount_cents: int
    captured_at: dt.datetime


class CapturePayment(Event, proto=payments_pb2.CapturePayment, key="order_id"):
    order_id: str
    customer_id: str
    amount_cents: int


class PaymentDeclined(Event, proto=payments_pb2.PaymentDeclined, key="order_id"):
    order_id: str
    amount_cents: int
    reason: str
