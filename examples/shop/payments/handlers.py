"""Handlers of the payments slice: answer each CapturePayment with PaymentCaptured or -Declined."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

from dishka import Provider, Scope, provide

from wirebus import Router

from .messages import CapturePayment, PaymentCaptured, PaymentDeclined

router = Router("payments")


@dataclasses.dataclass(frozen=True, slots=True)
class PaymentPolicy:
    """What the payment provider accepts: payments up to ``limit_cents``."""

    limit_cents: int = 100_000


class PaymentsProvider(Provider):
    """Provides the :class:`PaymentPolicy` (``limit_cents``: payments over it are declined)."""

    def __init__(self, limit_cents: int = 100_000) -> None:
        super().__init__()
        self._policy = PaymentPolicy(limit_cents=limit_cents)

    @provide(scope=Scope.APP)
    def policy(self) -> PaymentPolicy:
        return self._policy


@router.handler
async def capture_payment(
    cmd: CapturePayment, policy: PaymentPolicy
) -> PaymentCaptured | PaymentDeclined:
    # A real slice would call a payment provider here; the example declines over a limit.
    if cmd.amount_cents > policy.limit_cents:
        return PaymentDeclined(
            order_id=cmd.order_id,
            amount_cents=cmd.amount_cents,
            reason=f"over the limit of {policy.limit_cents} cents",
        )
    return PaymentCaptured(
        payment_id=str(uuid.uuid4()),
        order_id=cmd.order_id,
        amount_cents=cmd.amount_cents,
        captured_at=dt.datetime.now(dt.UTC),
    )
