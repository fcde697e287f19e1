"""Messages of the payments slice, bound to ``shop.payments.v1``."""

from __future__ import annotations

import datetime as dt

from shop.payments.v1 import payments_pb2

from wirebus import Event


class PaymentCaptured(Event, proto=payments_pb2.PaymentCaptured, key="order_id"):
    payment_id: str
    order_id: str
    amount_cents: int
    captured_at: dt.datetime
