"""Router registration rules, App wiring and lifecycle, and the shop example in-process."""

import datetime as dt
import logging
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from dishka import Provider, Scope, provide
from shop.orders.v1 import orders_pb2

from examples.shop.app import app as shop_app
from examples.shop.orders.handlers import router as orders_router
from examples.shop.orders.messages import (
    CancelOrder,
    GetOrder,
    LineItem,
    ListOrders,
    OrderRef,
    OrderStatus,
    PlaceOrder,
)
from examples.shop.orders.store import OrderStore
from examples.shop.orders.store import metadata as orders_metadata
from wirebus import (
    App,
    Command,
    ConfigurationError,
    Context,
    Event,
    FailedPrecondition,
    FieldViolation,
    HandlerNotFound,
    InvalidArgument,
    LifecycleError,
    Query,
    Router,
)


class Ping(Command[str]):
    text: str = ""


class Numbers(Query[int]):
    upto: int = 0


class Happened(Event):
    n: int = 0


# ---------------------------------------------------------------- Router


def test_the_handler_decorator_returns_the_function_unchanged_and_records_a_spec() -> None:
    router = Router("slice")

    async def ping(cmd: Ping) -> str:
        return ""

    assert router.handler(ping) is ping
    [spec] = router.specs
    assert (spec.kind, spec.message_type, spec.target, spec.router) == (
        "request",
        Ping,
        ping,
        "slice",
    )
    assert spec.name.endswith("ping")


def test_the_handler_kind_follows_from_the_message_type_and_the_function_kind() -> None:
    router = Router()

    @router.handler
    async def ping(cmd: Ping) -> str:
        return ""

    @router.handler
    async def numbers(q: Numbers) -> AsyncIterator[int]:
        yield 1

    @router.handler
    async def on_happened(e: Happened) -> None:
        pass

    @router.handler(event=True)
    async def on_raw(e: orders_pb2.OrderPlaced) -> None:
        pass

    @router.handler
    async def raw_request(r: orders_pb2.GetOrderRequest) -> orders_pb2.Order:
        return orders_pb2.Order()

    assert [s.kind for s in router.specs] == ["request", "stream", "event", "event", "request"]


def test_a_class_with_a_handle_method_is_a_handler() -> None:
    router = Router()

    @router.handler
    class PingHandler:
        async def handle(self, cmd: Ping, ctx: Context) -> str:
            return ""

    [spec] = router.specs
    assert (spec.is_class, spec.message_type, spec.params.context) == (True, Ping, "ctx")


def test_a_non_async_function_is_rejected() -> None:
    def ping(cmd: Ping) -> str:
        return ""

    with pytest.raises(ConfigurationError, match=r"handlers must be `async def`"):
        Router().handler(ping)


def test_a_class_whose_handle_is_not_async_is_rejected() -> None:
    class SyncHandler:
        def handle(self, cmd: Ping) -> str:
            return ""

    with pytest.raises(ConfigurationError, match=r"SyncHandler: handlers must be `async def`"):
        Router().handler(SyncHandler)


def test_a_class_without_a_handle_method_is_rejected() -> None:
    class NoHandle:
        async def run(self, cmd: Ping) -> str:
            return ""

    with pytest.raises(ConfigurationError, match="a handler class needs a `handle` method"):
        Router().handler(NoHandle)


def test_an_unannotated_message_parameter_is_rejected() -> None:
    async def ping(cmd) -> str:  # type: ignore[no-untyped-def]
        return ""

    with pytest.raises(
        ConfigurationError, match="the first parameter must be the message, annotated"
    ):
        Router().handler(ping)


def test_a_handler_without_parameters_is_rejected() -> None:
    async def nothing() -> None:
        pass

    with pytest.raises(ConfigurationError, match="the first parameter must be the message"):
        Router().handler(nothing)


def test_an_unannotated_extra_parameter_is_rejected() -> None:
    async def ping(cmd: Ping, repo) -> str:  # type: ignore[no-untyped-def]
        return ""

    with pytest.raises(ConfigurationError, match="parameter 'repo' needs a type annotation"):
        Router().handler(ping)


def test_star_args_cannot_be_injected() -> None:
    async def ping(cmd: Ping, **extra: Any) -> str:
        return ""

    with pytest.raises(ConfigurationError, match=r"\*args/\*\*kwargs cannot be injected \(extra\)"):
        Router().handler(ping)


def test_the_message_annotation_must_be_a_class() -> None:
    async def ping(cmd: Ping | None) -> str:
        return ""

    with pytest.raises(ConfigurationError, match="the message annotation must be a class"):
        Router().handler(ping)


def test_an_unresolvable_annotation_is_rejected() -> None:
    async def ping(cmd: "Undefined") -> str:  # type: ignore[name-defined]  # noqa: F821
        return ""

    with pytest.raises(ConfigurationError, match="cannot resolve an annotation"):
        Router().handler(ping)


def test_an_event_handler_cannot_be_an_async_generator() -> None:
    async def on_happened(e: Happened) -> AsyncIterator[int]:
        yield 1

    with pytest.raises(ConfigurationError, match="an event handler cannot be an async generator"):
        Router().handler(on_happened)


# ---------------------------------------------------------------- App


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"event_dispatch": "parallel"}, "event_dispatch must be 'sequential' or 'concurrent'"),
        ({"max_concurrency": 0}, "max_concurrency must be at least 1"),
        ({"services": ["shop.orders.v1"]}, "services= takes generated"),
    ],
)
def test_invalid_app_settings_are_configuration_errors(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        App(**kwargs)


def test_a_router_cannot_be_included_twice() -> None:
    router = Router("orders")

    with pytest.raises(ConfigurationError, match="router 'orders' is included twice"):
        App(routers=[router, router])


def test_a_served_service_needs_a_handler_per_method_unless_unbound_is_allowed() -> None:
    router = Router()

    @router.handler
    async def get_order(q: orders_pb2.GetOrderRequest) -> orders_pb2.Order:
        return orders_pb2.Order()

    with pytest.raises(ConfigurationError, match="PlaceOrder has no handler"):
        App(services=[orders_pb2], routers=[router]).mediator()
    routes = App(services=[orders_pb2], routers=[router], allow_unbound=True).check()
    bound = {r.method: r.spec.name.rsplit(".", 1)[-1] if r.spec else None for r in routes}
    assert bound == {
        "PlaceOrder": None,
        "GetOrder": "get_order",
        "CancelOrder": None,
        "ListOrders": None,
        "ImportOrders": None,
        "WatchOrders": None,
    }


class Counter:
    """APP-scoped: one per mediator of one app."""

    def __init__(self) -> None:
        self.value = 0


class CounterProvider(Provider):
    counter = provide(Counter, scope=Scope.APP)


def counting_router() -> Router:
    router = Router("counting")

    @router.handler
    async def ping(cmd: Ping, counter: Counter) -> str:
        counter.value += 1
        return str(counter.value)

    return router


async def test_two_apps_share_no_handlers_behaviours_or_dependencies() -> None:
    shared = counting_router()
    calls: list[str] = []

    async def only_in_first(request: Any, call_next: Any) -> Any:
        calls.append("behaviour")
        return await call_next(request)

    first = App(routers=[shared], providers=[CounterProvider()])
    second = App(routers=[shared], providers=[CounterProvider()])
    first.add_behaviour(only_in_first)
    third = App()

    async with first.mediator() as m1, second.mediator() as m2, third.mediator() as m3:
        assert [await m1.send(Ping()), await m1.send(Ping())] == ["1", "2"]
        assert await m2.send(Ping()) == "1"
        with pytest.raises(HandlerNotFound):
            await m3.send(Ping())

    assert calls == ["behaviour", "behaviour"]


async def test_each_mediator_of_one_app_gets_fresh_app_scoped_dependencies() -> None:
    app = App(routers=[counting_router()], providers=[CounterProvider()])

    async with app.mediator() as m:
        assert await m.send(Ping()) == "1"
    async with app.mediator() as m:
        assert await m.send(Ping()) == "1"


class Tracked:
    def __init__(self) -> None:
        self.finalised = 0


class TrackedProvider(Provider):
    @provide(scope=Scope.APP)
    def tracked(self) -> Iterator[Tracked]:
        t = Tracked()
        yield t
        t.finalised += 1


async def test_closing_a_mediator_twice_finalises_its_dependencies_once() -> None:
    got: list[Tracked] = []
    router = Router()

    @router.handler
    async def ping(cmd: Ping, tracked: Tracked) -> str:
        got.append(tracked)
        return ""

    m = App(routers=[router], providers=[TrackedProvider()]).mediator()
    async with m:
        await m.send(Ping())
    await m.close()

    assert got[0].finalised == 1


async def test_a_closed_mediator_cannot_be_entered_again() -> None:
    m = App().mediator()
    async with m:
        pass

    with pytest.raises(LifecycleError, match="this mediator was closed"):
        async with m:
            pass


def test_describe_lists_methods_events_and_in_process_requests() -> None:
    text = shop_app.describe()

    service, orders, payments = (
        "/shop.orders.v1.OrderService",
        "examples.shop.orders.handlers",
        "examples.shop.payments.handlers",
    )
    assert f"{service}/PlaceOrder [unary_unary] -> {orders}.place_order" in text
    assert f"{service}/ListOrders [unary_stream] -> {orders}.list_orders" in text
    placed = "shop.orders.v1.OrderPlaced on topic shop.orders.v1"
    assert f"{placed} -> wirebus.saga.checkout.start_on_OrderPlaced" in text
    capture = "shop.payments.v1.CapturePayment on topic shop.payments.v1"
    assert f"{capture} -> {payments}.capture_payment" in text


# ---------------------------------------------------------------- the shop example, in-process

ITEMS = (
    LineItem(sku="book", quantity=2, price_cents=1250),
    LineItem(sku="pen", quantity=3, price_cents=199),
)


async def test_a_placed_order_is_paid_once_payments_captured_it() -> None:
    async with shop_app.mediator() as m:
        ref = await m.send(PlaceOrder(customer_id="c1", items=ITEMS))
        order = await m.send(GetOrder(order_id=ref.order_id))

    assert isinstance(ref, OrderRef)
    assert ref.order_id
    assert order.status is OrderStatus.PAID
    assert order.total_cents == 2 * 1250 + 3 * 199
    assert order.items == ITEMS
    assert order.customer_id == "c1"
    assert order.placed_at.tzinfo is not None
    assert dt.datetime.now(dt.UTC) - order.placed_at < dt.timedelta(minutes=1)


async def test_without_the_payments_slice_a_placed_order_stays_pending() -> None:
    app = App(routers=[orders_router], providers=[_store_provider()], metadata=orders_metadata)

    async with app.mediator() as m:
        ref = await m.send(PlaceOrder(customer_id="c1", items=ITEMS))
        order = await m.send(GetOrder(order_id=ref.order_id))

    assert order.status is OrderStatus.PENDING


def _store_provider() -> Provider:
    p = Provider(scope=Scope.REQUEST)
    p.provide(OrderStore)  # on the request's session
    return p


async def test_the_shop_lists_a_customers_orders_and_refuses_cancelling_twice() -> None:
    async with shop_app.mediator() as m:
        first = await m.send(PlaceOrder(customer_id="c1", items=ITEMS[:1]))
        await m.send(PlaceOrder(customer_id="c2", items=ITEMS[1:]))
        second = await m.send(PlaceOrder(customer_id="c1", items=ITEMS[1:]))

        listed = [o.order_id async for o in m.stream(ListOrders(customer_id="c1"))]
        await m.send(CancelOrder(order_id=first.order_id, reason="changed my mind"))
        with pytest.raises(FailedPrecondition) as info:
            await m.send(CancelOrder(order_id=first.order_id))
        cancelled = await m.send(GetOrder(order_id=first.order_id))

    assert listed == [first.order_id, second.order_id]
    assert info.value.reason == "ORDER_ALREADY_CANCELLED"
    assert cancelled.status is OrderStatus.CANCELLED


async def test_the_shop_rejects_an_invalid_order_naming_each_field() -> None:
    async with shop_app.mediator() as m:
        with pytest.raises(InvalidArgument) as info:
            await m.send(
                PlaceOrder(customer_id="", items=(LineItem(sku="x", quantity=0, price_cents=-1),))
            )

    assert info.value.violations == (
        FieldViolation("customer_id", "must be at least 1 characters [string.min_len]"),
        FieldViolation("items[0].quantity", "must be greater than or equal to 1 [int32.gte]"),
        FieldViolation("items[0].price_cents", "must be greater than or equal to 0 [int64.gte]"),
    )


async def test_the_shop_logs_each_request_with_a_correlation_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="examples.shop")

    async with shop_app.mediator() as m:
        await m.send(PlaceOrder(customer_id="c1", items=ITEMS))

    # the behaviour wraps the in-process event handlers too, and the checkout saga's
    # transitions (Advance, Due: requests and events of the same pipeline) and the
    # requests its steps send
    lines = [r.getMessage() for r in caplog.records if r.name == "examples.shop"]
    for line in lines:
        assert re.fullmatch(r"\[\w+\] \w+ ok in [0-9.]+ ms", line), line
    names = [line.split()[1] for line in lines]
    domain = ["PlaceOrder", "OrderPlaced", "ReserveStock", "CapturePayment", "PaymentCaptured"]
    assert [n for n in names if n in domain or n == "MarkOrderPaid"] == [*domain, "MarkOrderPaid"]
    # and each status change (PENDING, PAID) is a notification whose handler calls back
    # GetOrder, and a snapshot the replica keeps; the saga's first step reads the order too
    for change in ("OrderStatusChanged", "OrderSnapshot"):
        assert names.count(change) == 2, names
    assert names.count("GetOrder") == 3, names
