"""The shop's checkout saga on PostgreSQL and the real Kafka, through a Runtime.

The runtime runs the shop as ``wirebus run`` does (relay, consumers, saga
poller): an order placed starts the saga from its OrderPlaced record on
Kafka, CapturePayment goes to Kafka through the PostgreSQL outbox, the
payments slice answers on Kafka, and the answer confirms or compensates.
The shop's topics are shared with other tests and engineers (whose payments
services would answer this test's orders), so each test moves the shop's
events to topics of its own.
"""

from __future__ import annotations

import pytest

from examples.shop.app import ShopSettings, build_app
from examples.shop.inventory.messages import GetStock, SetStock
from examples.shop.orders.messages import (
    GetOrder,
    LineItem,
    OrderCancelled,
    OrderPlaced,
    OrderStatus,
    PlaceOrder,
)
from examples.shop.payments.messages import CapturePayment, PaymentCaptured, PaymentDeclined
from wirebus import App
from wirebus.runtime import Runtime
from wirebus.saga import SagaState, SagaStatus
from wirebus.settings import Settings
from wirebus.testing import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def own_topics(fresh: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shop's events travel on topics of this test alone (the shop's are shared)."""
    for event, topic in (
        (OrderPlaced, f"{fresh}.orders"),
        (OrderCancelled, f"{fresh}.orders"),
        (CapturePayment, f"{fresh}.payments"),
        (PaymentCaptured, f"{fresh}.payments"),
        (PaymentDeclined, f"{fresh}.payments"),
    ):
        monkeypatch.setattr(event, "__wirebus_topic__", topic)


async def checkout(
    app: App, pg_url: str, bootstrap: str, fresh: str, items: tuple[LineItem, ...], **kw: object
) -> tuple[SagaState, OrderStatus, int | None]:
    """Place an order on a running shop; the saga's end, the order's status, the stock left."""
    settings = Settings(database_url=pg_url, kafka_bootstrap=bootstrap)
    runtime = Runtime(app, settings, consume=True, group=f"{fresh}-shop", **kw)  # type: ignore[arg-type]
    async with runtime:
        assert runtime.mediator is not None
        mediator = runtime.mediator
        await mediator.send(SetStock(sku=f"{fresh}-book", available=5))
        ref = await mediator.send(PlaceOrder(customer_id=f"{fresh}-alice", items=items))
        engine = app.saga_engine(mediator)

        async def finished() -> SagaState | None:
            state = await engine.find("checkout", ref.order_id)
            return state if state is not None and state.status.final else None

        state = await wait_until(finished, within=60, message=f"checkout {ref.order_id}")
        order = await mediator.send(GetOrder(order_id=ref.order_id))
        stock = await mediator.send(GetStock(sku=f"{fresh}-book"))
    return state, order.status, stock


def books(fresh: str, price_cents: int) -> tuple[LineItem, ...]:
    return (LineItem(sku=f"{fresh}-book", quantity=2, price_cents=price_cents),)


async def test_a_captured_payment_on_kafka_completes_the_checkout_and_the_order_is_paid(
    pg_url: str, bootstrap: str, fresh: str
) -> None:
    state, status, stock = await checkout(build_app(), pg_url, bootstrap, fresh, books(fresh, 1250))

    assert state.status is SagaStatus.COMPLETED
    assert state.data["payment_id"]
    assert status is OrderStatus.PAID
    assert stock == 3


async def test_a_declined_payment_on_kafka_releases_the_stock_and_cancels_the_order(
    pg_url: str, bootstrap: str, fresh: str
) -> None:
    # 120,000 cents: over the default limit, so any payments service declines it
    state, status, stock = await checkout(
        build_app(), pg_url, bootstrap, fresh, books(fresh, 60_000)
    )

    assert state.status is SagaStatus.COMPENSATED
    assert "PaymentDeclined" in state.error
    assert status is OrderStatus.CANCELLED
    assert stock == 5


async def test_a_payment_service_that_never_answers_times_out_and_compensates_on_postgres(
    pg_url: str, bootstrap: str, fresh: str
) -> None:
    app = build_app(ShopSettings(payment_timeout=1.0), payments=False)

    state, status, stock = await checkout(
        app, pg_url, bootstrap, fresh, books(fresh, 1250), saga_poll=0.2
    )

    assert state.status is SagaStatus.COMPENSATED
    assert ("capture payment", "timed out") in [(h.step, h.outcome) for h in state.history]
    assert status is OrderStatus.CANCELLED
    assert stock == 5
