"""``AppHarness``: an app run in-process as ``wirebus run`` runs it, asserted on without sleeps."""

from __future__ import annotations

import datetime as dt
import inspect
import re
from types import ModuleType

import grpc
import grpc.aio
import pytest
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

from examples.shop.app import app as shop_app
from examples.shop.orders.messages import (
    GetOrder,
    LineItem,
    ListOrders,
    OrderPlaced,
    OrderSnapshot,
    OrderStatus,
    OrderStatusChanged,
    PlaceOrder,
)
from examples.shop.payments.messages import CapturePayment, PaymentCaptured
from tests.unit import test_readme
from wirebus import App, Context, Router
from wirebus.broker import OutgoingRecord
from wirebus.errors import LifecycleError
from wirebus.testing import AppHarness

quickstart = test_readme.quick_start
"""Fixture: the README's Quick start saved as ``quickstart.py`` and imported."""

ITEMS = (LineItem(sku="book", quantity=2, price_cents=1250),)


def placed(order_id: str = "o-1", total: int = 100) -> OrderPlaced:
    return OrderPlaced(
        order_id=order_id,
        customer_id="c1",
        items=ITEMS,
        total_cents=total,
        placed_at=dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
    )


class Declined(Exception):
    """The payment provider said no."""


def declining_app(name: str = "declining") -> App:
    """An app whose only event handler fails on every OrderPlaced."""
    router = Router("payments")

    @router.handler
    async def capture(event: OrderPlaced) -> None:
        raise Declined(f"card declined for {event.order_id}")

    return App(name=name, routers=[router])


def counting_app(name: str, seen: list[str]) -> App:
    router = Router("audit")

    @router.handler
    async def remember(event: OrderPlaced, ctx: Context) -> None:
        seen.append(event.order_id)

    return App(name=name, routers=[router])


async def test_a_sent_command_publishes_its_event_through_the_outbox_with_cloudevents() -> None:
    async with AppHarness(shop_app, consume=False) as shop:
        ref = await shop.send(PlaceOrder(customer_id="c1", items=ITEMS))
        [event] = await shop.wait_published(OrderPlaced)

    assert isinstance(event.event, OrderPlaced)
    assert (event.event.order_id, event.event.total_cents) == (ref.order_id, 2500)
    assert (event.topic, event.key) == ("shop.orders.v1", ref.order_id)
    assert (event.ce_type, event.ce_source, event.ce_subject) == (
        "shop.orders.v1.OrderPlaced",
        "shop",
        None,
    )
    assert event.ce_id
    assert dt.datetime.now(dt.UTC) - event.ce_time < dt.timedelta(minutes=1)


async def test_place_order_over_grpc_is_captured_by_payments_and_read_back_paid() -> None:
    async with AppHarness(shop_app) as shop:
        stub = orders_pb2_grpc.OrderServiceStub(await shop.channel())
        reply = await stub.PlaceOrder(
            orders_pb2.PlaceOrderRequest(customer_id="c1", items=[orders_pb2.LineItem(
                sku="book", quantity=2, price_cents=1250
            )])
        )  # fmt: skip
        [order_placed] = await shop.wait_published(OrderPlaced)
        await shop.handled(order_placed)  # by the payments slice, from the broker
        [captured] = await shop.wait_published(PaymentCaptured)
        await shop.handled(captured)  # by the orders slice: the order is paid
        order = await stub.GetOrder(orders_pb2.GetOrderRequest(order_id=reply.order_id))

    assert order_placed.key == captured.key == reply.order_id
    assert captured.event.amount_cents == 2500
    assert order.status == orders_pb2.ORDER_STATUS_PAID


async def test_idle_returns_once_every_cascade_of_events_was_relayed_and_consumed() -> None:
    async with AppHarness(shop_app) as shop:
        ref = await shop.send(PlaceOrder(customer_id="c1", items=ITEMS))
        await shop.idle()
        order = await shop.send(GetOrder(order_id=ref.order_id))

    assert order.status is OrderStatus.PAID
    kinds = [type(p.event) for p in shop.published()]  # topic by topic, each in order
    assert [k for k in kinds if k in (OrderPlaced, CapturePayment, PaymentCaptured)] == [
        OrderPlaced,
        CapturePayment,
        PaymentCaptured,
    ]
    # and each status change (placed, paid) as a notification and a snapshot
    statuses = [OrderStatus.PENDING, OrderStatus.PAID]
    assert [p.event.status for p in shop.published(OrderStatusChanged)] == statuses
    assert [p.event.order.status for p in shop.published(OrderSnapshot)] == statuses
    assert len(kinds) == 7


async def test_a_streaming_query_yields_its_items_in_process() -> None:
    async with AppHarness(shop_app, consume=False) as shop:
        first = await shop.send(PlaceOrder(customer_id="c1", items=ITEMS))
        await shop.send(PlaceOrder(customer_id="c2", items=ITEMS))
        listed = [o.order_id async for o in shop.stream(ListOrders(customer_id="c1"))]

    assert listed == [first.order_id]


async def test_send_metadata_is_what_the_apps_behaviours_see_as_the_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="examples.shop")
    async with AppHarness(shop_app, consume=False) as shop:
        await shop.send(
            PlaceOrder(customer_id="c1", items=ITEMS), metadata={"X-Correlation-Id": "corr-7"}
        )

    assert any("[corr-7] PlaceOrder ok" in r.getMessage() for r in caplog.records)


async def test_a_delivered_event_reaches_the_consumers_and_is_not_counted_as_published() -> None:
    async with AppHarness(shop_app) as shop:
        # another service's checkout asks the shop's payments slice to capture a payment
        capture = CapturePayment(order_id="o-9", customer_id="c1", amount_cents=700)
        delivered = await shop.deliver(capture, source="checkout", subject="o-9")
        await shop.handled(delivered)
        [captured] = await shop.wait_published(PaymentCaptured)

    assert (delivered.ce_source, delivered.ce_subject, delivered.key) == ("checkout", "o-9", "o-9")
    assert shop.published(CapturePayment) == []
    assert (captured.event.order_id, captured.event.amount_cents) == ("o-9", 700)


async def test_the_inbox_drops_a_second_delivery_of_the_same_event_id() -> None:
    seen: list[str] = []
    async with AppHarness(counting_app("audit", seen)) as audit:
        first = await audit.deliver(placed("o-1"), event_id="evt-1")
        again = await audit.deliver(placed("o-1"), event_id="evt-1")
        await audit.handled(first)
        copy = await audit.settled(again)

    assert copy.outcome == "duplicate"
    assert audit.outcomes("evt-1") == ["handled", "duplicate"]
    assert seen == ["o-1"]


async def test_a_failing_handler_dead_letters_the_event_after_its_retries() -> None:
    async with AppHarness(declining_app()) as payments:
        delivered = await payments.deliver(placed("o-2"))
        consumed = await payments.settled(delivered)
        with pytest.raises(AssertionError, match="dead_lettered, not handled: Declined: card"):
            await payments.handled(delivered)

    assert consumed.outcome == "dead_lettered"
    [dead] = payments.dead_letters("shop.orders.v1")
    assert (dead.topic, dead.ce_id, dead.ce_type) == (
        "shop.orders.v1.dlq",
        delivered.ce_id,
        "shop.orders.v1.OrderPlaced",
    )
    assert (dead.error_type, dead.error_message) == ("Declined", "card declined for o-2")
    assert (dead.original_topic, dead.original_offset, dead.attempts) == ("shop.orders.v1", 0, 3)


async def test_a_record_that_is_not_a_cloudevent_is_dead_lettered_as_malformed() -> None:
    async with AppHarness(shop_app) as shop:
        [record] = await shop.deliver_records(
            [OutgoingRecord("shop.orders.v1", b"k", b"\xff garbage", ())]
        )
        consumed = await shop.settled(record)

    assert (consumed.outcome, consumed.ce_id) == ("dead_lettered", None)
    [dead] = shop.dead_letters()
    assert (dead.error_type, dead.attributes) == ("MalformedEvent", None)


async def test_an_unknown_grpc_method_is_unimplemented() -> None:
    async with AppHarness(shop_app, consume=False) as shop:
        channel = await shop.channel()
        call = channel.unary_unary("/shop.orders.v1.OrderService/Refund")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(b"")

    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_the_gateway_starts_only_when_a_channel_is_asked_for() -> None:
    async with AppHarness(shop_app, consume=False) as shop:
        with pytest.raises(LifecycleError, match="call channel\\(\\) or gateway=True"):
            print(shop.address)
        await shop.channel()
        host, port = shop.address.rsplit(":", 1)

    assert host == "127.0.0.1"
    assert int(port) > 0


async def test_two_harnesses_of_two_apps_in_one_test_share_nothing() -> None:
    seen_a: list[str] = []
    seen_b: list[str] = []
    async with (
        AppHarness(counting_app("a", seen_a)) as a,
        AppHarness(counting_app("b", seen_b)) as b,
    ):
        await a.handled(await a.deliver(placed("only-a"), event_id="same-id"))
        await b.handled(await b.deliver(placed("only-b"), event_id="same-id"))

    assert (seen_a, seen_b) == (["only-a"], ["only-b"])
    assert a.broker is not b.broker
    assert [c.outcome for c in a.consumed] == [c.outcome for c in b.consumed] == ["handled"]


async def test_a_wait_that_cannot_hold_times_out_saying_what_it_saw() -> None:
    async with AppHarness(shop_app, consume=False) as shop:
        with pytest.raises(TimeoutError, match=r"1 OrderPlaced published \(saw 0\)"):
            await shop.wait_published(OrderPlaced, within=0.1)


async def test_a_harness_is_used_inside_async_with_only_once() -> None:
    harness = AppHarness(shop_app, consume=False)
    with pytest.raises(LifecycleError, match="start the harness"):
        print(harness.mediator)
    async with harness:
        pass

    with pytest.raises(LifecycleError, match="a stopped harness cannot be started again"):
        await harness.start()


def readme_testing_blocks() -> list[str]:
    """The ```python blocks of the README's ``## Testing your app`` section."""
    section = test_readme.README.read_text(encoding="utf-8").split("\n## Testing your app\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    return re.findall(r"^```python\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)


async def test_the_readme_testing_example_passes_against_the_quick_start_app(
    quickstart: ModuleType,
) -> None:
    assert quickstart.app.name == "shop"  # saved as quickstart.py, importable
    [source] = readme_testing_blocks()
    namespace: dict[str, object] = {"__name__": "test_quickstart"}
    exec(compile(source, "README.md#testing-your-app", "exec"), namespace)
    tests = [f for name, f in namespace.items() if name.startswith("test_")]

    assert len(tests) == 2
    for test in tests:
        assert inspect.iscoroutinefunction(test)
        await test()
