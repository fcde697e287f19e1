"""The shop's checkout saga split into the two processes the saga crash test kills.

- ``saga_app``: the shop of :func:`examples.shop.app.build_app` without its
  payments slice. ``wirebus consume ... --slice checkout`` runs it: the
  relay, the consumer of the saga's start and reply events and the saga
  poller (recovery at start-up, then the due timeouts);
- ``payments_app``: the payments slice alone, answering each
  ``CapturePayment`` with the shop's own handler, except for the orders of
  a *silent* customer (id starting with ``SILENT_PREFIX``): those get no
  answer at all, so their checkout deterministically times out and
  compensates.

Every shop event travels on topics of the test's own (``CHECKOUT_TOPICS``
is their prefix): the shop's topics are shared with other engineers' shops,
whose payments services would answer this test's orders.

Configured by the environment of the test that starts it (read at import,
fine for a test fixture app):

- ``CHECKOUT_TOPICS``: the topics' prefix (unset: the shop's own topics);
- ``SHOP_PAYMENT_LIMIT_CENTS`` / ``SHOP_PAYMENT_TIMEOUT_SECONDS``: as for the shop.
"""

from __future__ import annotations

import os

from examples.shop.app import ShopSettings, build_app
from examples.shop.orders.messages import (
    OrderCancelled,
    OrderPlaced,
    OrderSnapshot,
    OrderStatusChanged,
)
from examples.shop.payments.handlers import PaymentPolicy, PaymentsProvider
from examples.shop.payments.handlers import capture_payment as shop_capture_payment
from examples.shop.payments.messages import CapturePayment, PaymentCaptured, PaymentDeclined
from wirebus import App, Router

SILENT_PREFIX = "silent-"
"""Customers whose payments are never answered."""

EVENTS: dict[type, str] = {
    OrderPlaced: "orders",
    OrderCancelled: "orders",
    CapturePayment: "payments",
    PaymentCaptured: "payments",
    PaymentDeclined: "payments",
    OrderStatusChanged: "notifications",
    OrderSnapshot: "snapshots",
}
"""Every event of the shop and the suffix of the topic it travels on in the test."""


def topics_of(prefix: str) -> dict[type, str]:
    """Each shop event's topic for a test whose topics start with ``prefix``."""
    return {event: f"{prefix}.{suffix}" for event, suffix in EVENTS.items()}


router = Router("payments")


@router.handler
async def capture_payment(
    cmd: CapturePayment, policy: PaymentPolicy
) -> PaymentCaptured | PaymentDeclined | None:
    """The shop's answer, or none for a silent customer (the payment service never replies)."""
    if cmd.customer_id.startswith(SILENT_PREFIX):
        return None
    return await shop_capture_payment(cmd, policy)


def payments(settings: ShopSettings) -> App:
    """The payments process: the shop's payment handler behind the silent-customer switch."""
    return App(
        name="shop-payments",
        routers=[router],
        providers=[PaymentsProvider(settings.payment_limit_cents)],
        events=[CapturePayment, PaymentCaptured, PaymentDeclined],
    )


PREFIX = os.environ.get("CHECKOUT_TOPICS", "")
if PREFIX:  # this process's events go to the test's topics, before the apps are built
    for _event, _topic in topics_of(PREFIX).items():
        _event.__wirebus_topic__ = _topic  # type: ignore[attr-defined]

SETTINGS = ShopSettings.from_env()
saga_app = build_app(SETTINGS, payments=False)
payments_app = payments(SETTINGS)
