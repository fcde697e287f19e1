"""The shop app: ``wirebus run examples.shop.app:app``."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from dishka import Provider, Scope, provide
from shop.orders.v1 import orders_pb2

from wirebus import App, Validation
from wirebus.correlation import current_correlation

from .notifications.handlers import NoticeStore
from .notifications.handlers import router as notifications_router
from .orders.handlers import router as orders_router
from .orders.messages import OrderCancelled, OrderPlaced, OrderSnapshot, OrderStatusChanged
from .orders.store import OrderStore
from .orders.store import metadata as orders_metadata
from .payments.handlers import router as payments_router
from .payments.messages import PaymentCaptured
from .replica.handlers import ReplicaStore
from .replica.handlers import router as replica_router

log = logging.getLogger("examples.shop")


class ShopProvider(Provider):
    orders = provide(OrderStore, scope=Scope.REQUEST)  # on the request's session
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


app = App(
    name="shop",
    services=[orders_pb2],
    routers=[orders_router, payments_router, notifications_router, replica_router],
    providers=[ShopProvider()],
    behaviours=[log_with_correlation_id],
    validation=Validation(),  # the buf.validate rules of orders.proto, before any handler
    metadata=orders_metadata,  # the orders table, and the notices and replica tables
    # all travel, handled here or not; OrderStatusChanged (a notification, on
    # shop.orders.v1.notifications) and OrderSnapshot (the whole order, on the
    # compacted shop.orders.v1.snapshots) are keyed by order_id
    events=[OrderPlaced, OrderCancelled, PaymentCaptured, OrderStatusChanged, OrderSnapshot],
)
