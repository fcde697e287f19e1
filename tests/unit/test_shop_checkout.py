"""The shop's checkout saga, run as ``wirebus run`` runs it (SQLite, the in-memory broker).

Placing an order starts it: stock is reserved, CapturePayment goes to the
payments slice over the broker, and its answer confirms the order (PAID) or
compensates (stock released, order CANCELLED). A payments slice that never
answers makes the step time out and compensate the same way.
"""

from __future__ import annotations

import datetime as dt

from examples.shop.app import ShopSettings, build_app
from examples.shop.inventory.messages import GetStock, SetStock
from examples.shop.orders.messages import GetOrder, LineItem, OrderPlaced, OrderStatus, PlaceOrder
from examples.shop.payments.messages import CapturePayment, PaymentCaptured, PaymentDeclined
from wirebus import App
from wirebus.saga import SagaStatus
from wirebus.testing import AppHarness, wait_until

BOOKS = (LineItem(sku="book", quantity=2, price_cents=1250),)


async def checkout_of(shop: AppHarness, app: App, order_id: str, status: SagaStatus) -> None:
    engine = app.saga_engine(shop.mediator)

    async def reached() -> bool:
        state = await engine.find("checkout", order_id)
        return state is not None and state.status is status

    await wait_until(reached, within=10, message=f"checkout {order_id} never became {status}")


async def test_a_paid_checkout_takes_the_stock_and_marks_the_order_paid() -> None:
    app = build_app()
    async with AppHarness(app) as shop:
        await shop.send(SetStock(sku="book", available=5))
        ref = await shop.send(PlaceOrder(customer_id="alice", items=BOOKS))
        await checkout_of(shop, app, ref.order_id, SagaStatus.COMPLETED)

        order = await shop.send(GetOrder(order_id=ref.order_id))
        assert order.status is OrderStatus.PAID
        assert await shop.send(GetStock(sku="book")) == 3
        [capture] = shop.published(CapturePayment)
        assert (capture.key, capture.event.amount_cents) == (ref.order_id, 2500)
        [captured] = shop.published(PaymentCaptured)
        state = await app.saga_engine(shop.mediator).find("checkout", ref.order_id)
        assert state is not None
        assert state.data["payment_id"] == captured.event.payment_id


async def test_a_declined_payment_releases_the_stock_and_cancels_the_order() -> None:
    app = build_app(ShopSettings(payment_limit_cents=1000))  # 2,500 cents is over it
    async with AppHarness(app) as shop:
        await shop.send(SetStock(sku="book", available=5))
        ref = await shop.send(PlaceOrder(customer_id="bob", items=BOOKS))
        await checkout_of(shop, app, ref.order_id, SagaStatus.COMPENSATED)

        order = await shop.send(GetOrder(order_id=ref.order_id))
        assert order.status is OrderStatus.CANCELLED
        assert await shop.send(GetStock(sku="book")) == 5
        [declined] = shop.published(PaymentDeclined)
        assert declined.key == ref.order_id
        assert shop.published(PaymentCaptured) == []


async def test_a_payment_service_that_never_answers_times_out_and_compensates() -> None:
    app = build_app(ShopSettings(payment_timeout=0.2), payments=False)
    async with AppHarness(app) as shop:
        await shop.send(SetStock(sku="book", available=5))
        ref = await shop.send(PlaceOrder(customer_id="carol", items=BOOKS))
        await checkout_of(shop, app, ref.order_id, SagaStatus.COMPENSATED)

        order = await shop.send(GetOrder(order_id=ref.order_id))
        assert order.status is OrderStatus.CANCELLED
        assert await shop.send(GetStock(sku="book")) == 5
        state = await app.saga_engine(shop.mediator).find("checkout", ref.order_id)
        assert state is not None
        assert ("capture payment", "timed out") in [(h.step, h.outcome) for h in state.history]


async def test_an_order_out_of_stock_is_cancelled_without_asking_for_payment() -> None:
    app = build_app()
    async with AppHarness(app) as shop:
        await shop.send(SetStock(sku="book", available=1))
        ref = await shop.send(PlaceOrder(customer_id="dave", items=BOOKS))
        await checkout_of(shop, app, ref.order_id, SagaStatus.COMPENSATED)

        order = await shop.send(GetOrder(order_id=ref.order_id))
        assert order.status is OrderStatus.CANCELLED
        assert await shop.send(GetStock(sku="book")) == 1
        assert shop.published(CapturePayment) == []
        state = await app.saga_engine(shop.mediator).find("checkout", ref.order_id)
        assert state is not None
        assert state.error.startswith("reserve stock: FailedPrecondition")


async def test_an_order_placed_that_this_shop_does_not_store_ends_compensated_doing_nothing() -> (
    None
):
    # another deployment's OrderPlaced on the same topic: no order row here
    app = build_app()
    async with AppHarness(app) as shop:
        await shop.send(SetStock(sku="book", available=5))
        stranger = OrderPlaced(
            order_id="not-ours",
            customer_id="erin",
            items=BOOKS,
            total_cents=2500,
            placed_at=dt.datetime.now(dt.UTC),
        )
        await shop.handled(await shop.deliver(stranger))
        await checkout_of(shop, app, "not-ours", SagaStatus.COMPENSATED)

        assert await shop.send(GetStock(sku="book")) == 5  # nothing reserved
        assert shop.published(CapturePayment) == []  # no payment asked for
        state = await app.saga_engine(shop.mediator).find("checkout", "not-ours")
        assert state is not None
        assert state.error.startswith("accept order: NotFound")
