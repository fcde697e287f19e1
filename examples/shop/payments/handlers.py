"""Handlers of the payments slice: capture the payment of every placed order."""

from __future__ import annotations

import datetime as dt
import uuid

from wirebus import Router

from ..orders.messages import OrderPlaced
from .messages import PaymentCaptured

router = Router("payments")


@router.handler
async def capture_payment(event: OrderPlaced) -> PaymentCaptured:
    # A real slice would call a payment provider here; the example always succeeds.
    return PaymentCaptured(
        payment_id=str(uuid.uuid4()),
        order_id=event.order_id,
        amount_cents=event.total_cents,
        captured_at=dt.datetime.now(dt.UTC),
    )
