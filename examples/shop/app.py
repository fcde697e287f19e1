"""The shop app: ``wirebus run examples.shop.app:app``.

Slices: orders (gRPC), inventory (stock), payments (answers CapturePayment)
and checkout (the saga that ties them: reserve stock -> capture payment ->
confirm order). Two settings, read when this module is imported (the
example is an application, not the library): ``SHOP_PAYMENT_LIMIT_CENTS``
(payments over it are declined; default 100000) and
``SHOP_PAYMENT_TIMEOUT_SECONDS`` (how long checkout waits for the payment
service; default 30). ``build_app()`` builds one with other settings.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from dishka import Provider, Scope, provide
from shop.orders.v1 import orders_pb2

from wirebus import App, Validation
from wirebus.correlation import current_correlation

from .checkout.saga import checkout_saga
from .inventory.handlers import router as inventory_router
from .inventory.store import StockStore
from .notifications.handlers import NoticeStore
from .notifications.handlers import router as notifications_router
from .orders.handlers import router as orders_router
from .orders.messages import OrderCancelled, OrderPlaced, OrderSnapshot, OrderStatusChanged
from .orders.store import OrderStore
from .orders.store import metadata as orders_metadata
from .payments.handlers import PaymentsProvider
from .payments.handlers import router as payments_router
from .payments.messages import CapturePayment, PaymentCaptured, PaymentDeclined
from .replica.handlers import ReplicaStore
from .replica.handlers import router as replica_router

log = logging.getLogger("examples.shop")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ShopSettings:
    """The shop's own settings (see the module docstring)."""

    payment_limit_cents: int = 100_000
    payment_timeout: float = 30.0

    @classmethod
    def from_env(cls) -> ShopSettings:
        return cls(
            payment_limit_cents=int(os.environ.get("SHOP_PAYMENT_LIMIT_CENTS", "100000")),
            payment_timeout=float(os.environ.get("SHOP_PAYMENT_TIMEOUT_SECONDS", "30")),
        )


class ShopProvider(Provider):
    orders = provide(OrderStore, scope=Scope.REQUEST)  # on the request's session
    stock = provide(StockStore, scope=Scope.REQUEST)
    notices = provide(NoticeStore, scope=Scope.REQUEST)
    replica = provide(ReplicaStore, scope=Scope.REQUEST)


async def log_with_correlation_id(request: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
    """Log each request with the caller's ``x-correlation-id`` (or a new one)."""
    if not log.isEnabledFor(logging.INFO):  # nothing to log: no id, no clock
        return await call_next(request)
    bound = current_correlation()  # the call's: the id its events carry too
    correlation_id = bound.correlation_id if bound is not None else uuid.uuid4().hex[:12]
    started = time.perf_counter()
    try:
        result = await call_next(request)
    except Exception as exc:
        log.info("[%s] %s failed: %s", correlation_id, type(request).__name__, exc)
        raise
    log.info(
        "[%s] %s ok in %.1f ms",
        correlation_id,
        type(request).__name__,
        (time.perf_counter() - started) * 1000,
    )
    return result


def build_app(settings: ShopSettings | None = None, *, payments: bool = True) -> App:
    """The shop with ``settings`` (defaults: see :class:`ShopSettings`).

    ``payments=False`` leaves the payments slice out: nobody answers
    CapturePayment, so every checkout times out and compensates.
    """
    settings = settings or ShopSettings()
    slices = [
        orders_router,
        inventory_router,
        *([payments_router] if payments else []),
        notifications_router,
        replica_router,
    ]
    return App(
        name="shop",
        services=[orders_pb2],
        routers=slices,
        providers=[ShopProvider(), PaymentsProvider(settings.payment_limit_cents)],
        behaviours=[log_with_correlation_id],
        validation=Validation(),  # the buf.validate rules of orders.proto, before any handler
        metadata=orders_metadata,  # the orders', inventory's, notices' and replica's tables
        # all travel, handled here or not; OrderStatusChanged (a notification, on
        # shop.orders.v1.notifications) and OrderSnapshot (the whole order, on the
        # compacted shop.orders.v1.snapshots) are keyed by order_id
        events=[
            OrderPlaced,
            OrderCancelled,
            CapturePayment,
            PaymentCaptured,
            PaymentDeclined,
            OrderStatusChanged,
            OrderSnapshot,
        ],
        sagas=[checkout_saga(payment_timeout=settings.payment_timeout)],
    )


app = build_app(ShopSettings.from_env())
