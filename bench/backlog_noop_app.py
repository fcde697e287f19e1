"""The no-op peer of the shop's payments slice, and the backlog both drain.

One event handler for the shop's ``CapturePayment`` (topic ``shop.payments.v1``)
that does nothing and emits nothing: consumed by ``wirebus consume`` on the same
PostgreSQL database settings as the payments slice, each record still costs the
consumer's unit of work and inbox mark, but no outbox row. Example::

    wirebus consume backlog_noop_app:app --app-dir bench --group g1

:func:`capture_payments` is the backlog of ``consumer_backlog.py`` and
``consumer_backlog_inprocess.py``: the payments slice answers each with one
``PaymentCaptured`` through the outbox (amounts under the shop's limit). Until
the checkout saga (wave 13) the slice answered ``OrderPlaced`` on
``shop.orders.v1`` the same way; the work per record is the same.
"""

from __future__ import annotations

from examples.shop.payments.messages import CapturePayment
from wirebus import App, Router

router = Router("noop")


@router.handler
async def ignore_capture(event: CapturePayment) -> None:
    return None


def capture_payments(n: int) -> list[CapturePayment]:
    """``n`` CapturePayment, a distinct ``order_id`` each, all under the payment limit."""
    return [
        CapturePayment(
            order_id=f"order-{i:08d}",
            customer_id=f"customer-{i % 97}",
            amount_cents=1_150 + i % 1_000,
        )
        for i in range(n)
    ]


app = App(name="bench-noop", routers=[router], events=[CapturePayment])
