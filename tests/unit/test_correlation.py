"""Correlation and causation ids follow the work: from a call to its events and their consumers."""

from __future__ import annotations

import logging
import re

import pytest
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

from examples.shop.orders.messages import OrderPlaced
from examples.shop.payments.messages import CapturePayment, PaymentCaptured
from tests.unit._traced_shop import ITEMS, shop_app
from wirebus import App, Router
from wirebus.correlation import CorrelationFilter, current_correlation
from wirebus.testing import AppHarness


async def place(harness: AppHarness, metadata: tuple[tuple[str, str], ...] = ()) -> None:
    stub = orders_pb2_grpc.OrderServiceStub(await harness.channel())
    request = orders_pb2.PlaceOrderRequest(customer_id="alice", items=ITEMS)
    await stub.PlaceOrder(request, metadata=metadata)


async def test_the_callers_correlation_id_reaches_its_events_and_the_events_they_cause() -> None:
    async with AppHarness(shop_app()) as harness:
        await place(harness, (("x-correlation-id", "checkout-42"),))
        [placed] = await harness.wait_published(OrderPlaced)
        [capture] = await harness.wait_published(CapturePayment)
        [captured] = await harness.wait_published(PaymentCaptured)
    assert placed.attributes.correlationid == "checkout-42"
    assert placed.attributes.causationid == "checkout-42"  # the call caused it
    # the checkout saga, started by the consumed OrderPlaced, sent CapturePayment
    assert capture.attributes.correlationid == "checkout-42"
    assert capture.attributes.causationid == placed.attributes.id
    assert captured.attributes.correlationid == "checkout-42"
    assert captured.attributes.causationid == capture.attributes.id  # the consumed command did


async def test_a_call_without_a_correlation_id_gets_a_new_one_that_its_whole_chain_shares() -> None:
    async with AppHarness(shop_app()) as harness:
        await place(harness)
        await place(harness)
        placed = await harness.wait_published(OrderPlaced, count=2)
        captured = await harness.wait_published(PaymentCaptured, count=2)
    ids = [p.attributes.correlationid for p in placed]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i or "") for i in ids)
    assert ids[0] != ids[1]  # each call its own
    assert sorted(c.attributes.correlationid or "" for c in captured) == sorted(ids)


async def test_a_consumers_handler_sees_the_correlation_and_logs_carry_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[tuple[str, str]] = []
    router = Router("audit")
    log = logging.getLogger("tests.audit")

    @router.handler
    async def audit(event: OrderPlaced) -> None:
        correlation = current_correlation()
        assert correlation is not None
        seen.append((correlation.correlation_id, correlation.causation_id))
        log.info("audited %s", event.order_id)

    app = shop_app()
    app.include_router(router)
    caplog.handler.addFilter(CorrelationFilter())
    caplog.set_level(logging.INFO, logger="tests.audit")
    async with AppHarness(app) as harness:
        await place(harness, (("x-correlation-id", "checkout-7"),))
        [placed] = await harness.wait_published(OrderPlaced)
        await harness.handled(placed)
    assert seen == [("checkout-7", placed.attributes.id)]
    [record] = [r for r in caplog.records if r.name == "tests.audit"]
    assert record.correlation_id == "checkout-7"  # type: ignore[attr-defined]


async def test_in_process_sends_outside_any_call_do_not_share_a_correlation() -> None:
    router = Router("ids")
    from examples.shop.orders.messages import GetOrder

    @router.handler
    async def get(query: GetOrder) -> str:
        correlation = current_correlation()
        assert correlation is not None
        return correlation.correlation_id

    app = App(name="ids", routers=[router], tracing=False)
    async with AppHarness(app) as harness:
        first = await harness.send(GetOrder(order_id="a"))
        second = await harness.send(GetOrder(order_id="b"))
    assert first != second
    assert current_correlation() is None  # nothing left bound after the calls


def test_outside_any_call_log_records_show_a_dash() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    assert CorrelationFilter().filter(record)
    assert record.correlation_id == "-"  # type: ignore[attr-defined]
