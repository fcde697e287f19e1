"""The checkout saga: reserve stock -> capture payment -> confirm the order.

Started by every ``OrderPlaced`` and correlated by ``order_id``:

1. **accept order** -- checks the order is in this shop's database (a
   process of another deployment reading the same topic may see an
   ``OrderPlaced`` it does not store: that saga fails here, compensating
   nothing); its compensation cancels the order, so any later failure ends
   with the order cancelled;
2. **reserve stock** (in-process, the inventory slice) -- compensated by
   releasing it;
3. **capture payment** (messaging) -- sends ``CapturePayment`` over Kafka to
   the payments slice and waits for ``PaymentCaptured`` (ok) or
   ``PaymentDeclined`` (fail), at most ``payment_timeout`` seconds;
4. **confirm order** (in-process, the orders slice) -- the order becomes PAID.

A declined or unanswered payment releases the stock and cancels the order
(``GetOrder`` then says CANCELLED); a captured one ends with it PAID.

Example::

    app = App(..., sagas=[checkout_saga(payment_timeout=30.0)])
"""

from __future__ import annotations

import dataclasses

from wirebus import FailedPrecondition, Mediator, NotFound
from wirebus.saga import Saga, SagaState, Step

from ..inventory.messages import ReleaseStock, ReserveStock
from ..orders.messages import CancelOrder, GetOrder, MarkOrderPaid, OrderPlaced
from ..payments.messages import CapturePayment, PaymentCaptured, PaymentDeclined


@dataclasses.dataclass
class Checkout:
    """The saga's data (stored as JSON)."""

    order_id: str
    customer_id: str
    total_cents: int
    items: list[tuple[str, int]]
    payment_id: str = ""

    @classmethod
    def of(cls, placed: OrderPlaced) -> Checkout:
        return cls(
            order_id=placed.order_id,
            customer_id=placed.customer_id,
            total_cents=placed.total_cents,
            items=[(i.sku, i.quantity) for i in placed.items],
        )


async def accept_order(data: Checkout, mediator: Mediator) -> None:
    await mediator.send(GetOrder(order_id=data.order_id))  # NotFound: not this shop's order


async def cancel_order(data: Checkout, mediator: Mediator, state: SagaState) -> None:
    try:
        await mediator.send(CancelOrder(order_id=data.order_id, reason=state.error))
    except FailedPrecondition as exc:
        if exc.reason != "ORDER_ALREADY_CANCELLED":
            raise
    except NotFound:  # gone: nothing left to cancel
        pass


async def reserve_stock(data: Checkout, mediator: Mediator) -> None:
    items = tuple((sku, quantity) for sku, quantity in data.items)
    await mediator.send(ReserveStock(order_id=data.order_id, items=items))


async def release_stock(data: Checkout, mediator: Mediator) -> None:
    await mediator.send(ReleaseStock(order_id=data.order_id))


def capture_payment(data: Checkout) -> CapturePayment:
    return CapturePayment(
        order_id=data.order_id, customer_id=data.customer_id, amount_cents=data.total_cents
    )


def payment_captured(data: Checkout, reply: PaymentCaptured) -> None:
    data.payment_id = reply.payment_id


async def confirm_order(data: Checkout, mediator: Mediator) -> None:
    await mediator.send(MarkOrderPaid(order_id=data.order_id))


def checkout_saga(*, payment_timeout: float = 30.0) -> Saga[Checkout]:
    """The checkout saga, waiting ``payment_timeout`` seconds at most for the payment."""
    return Saga(
        "checkout",
        data=Checkout,
        key="order_id",
        start_on=[OrderPlaced],
        start=Checkout.of,
        steps=[
            Step("accept order", action=accept_order, compensate=cancel_order),
            Step("reserve stock", action=reserve_stock, compensate=release_stock),
            Step(
                "capture payment",
                send=capture_payment,
                replies={PaymentCaptured: payment_captured, PaymentDeclined: "fail"},
                timeout=payment_timeout,
            ),
            Step("confirm order", action=confirm_order),
        ],
    )
