"""Requests (and, when asked, events) are checked against the protos' buf.validate rules.

The shop's rules live in ``proto/shop/orders/v1/orders.proto`` as
protovalidate annotations; its app runs the :class:`~wirebus.Validation`
stage, so a request that breaks them is INVALID_ARGUMENT with a
``google.rpc.BadRequest`` naming every violated field and rule, before any
handler or behaviour runs.
"""

from __future__ import annotations

import ast
import datetime as dt
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import protovalidate
import pytest
from buf.validate import validate_pb2
from google.protobuf import descriptor_pb2
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

from examples.shop.app import app as shop_app
from examples.shop.orders.messages import LineItem, OrderPlaced, PlaceOrder
from tests.conftest import bad_request
from wirebus import (
    App,
    Authentication,
    ConfigurationError,
    InvalidArgument,
    Router,
    StaticTokens,
    Validation,
)
from wirebus.testing import AppHarness
from wirebus.validation import has_rules

BOOK = orders_pb2.LineItem(sku="book", quantity=1, price_cents=100)


@pytest.fixture
async def shop():
    async with AppHarness(shop_app) as harness:
        yield orders_pb2_grpc.OrderServiceStub(await harness.channel())


async def refused(stub: Any, request: orders_pb2.PlaceOrderRequest) -> list[tuple[str, str]]:
    """PlaceOrder ``request``: it must be INVALID_ARGUMENT; its (field, description) pairs."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.PlaceOrder(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = bad_request(caught.value)
    assert bad is not None
    return [(v.field, v.description) for v in bad.field_violations]


# ---------------------------------------------------------------- through the gateway


@pytest.mark.parametrize(
    ("request_message", "expected"),
    [
        pytest.param(
            orders_pb2.PlaceOrderRequest(customer_id="bob"),
            [("items", "must contain at least 1 item(s) [repeated.min_items]")],
            id="no items",
        ),
        pytest.param(
            orders_pb2.PlaceOrderRequest(
                customer_id="bob", items=[orders_pb2.LineItem(sku="x", quantity=0, price_cents=1)]
            ),
            [("items[0].quantity", "must be greater than or equal to 1 [int32.gte]")],
            id="quantity 0",
        ),
        pytest.param(
            orders_pb2.PlaceOrderRequest(
                customer_id="bob",
                items=[BOOK, orders_pb2.LineItem(sku="x", quantity=1, price_cents=-5)],
            ),
            [("items[1].price_cents", "must be greater than or equal to 0 [int64.gte]")],
            id="negative price",
        ),
        pytest.param(
            orders_pb2.PlaceOrderRequest(customer_id="", items=[BOOK]),
            [("customer_id", "must be at least 1 characters [string.min_len]")],
            id="empty customer id",
        ),
        pytest.param(
            orders_pb2.PlaceOrderRequest(customer_id="c" * 256, items=[BOOK]),
            [("customer_id", "must be at most 255 characters [string.max_len]")],
            id="customer id of 256 characters",
        ),
        pytest.param(
            orders_pb2.PlaceOrderRequest(customer_id="al\x00ice", items=[BOOK]),
            [("customer_id", "must not contain a NUL character [string.no_nul]")],
            id="NUL in the customer id",
        ),
    ],
)
async def test_place_order_breaking_a_rule_is_invalid_argument_naming_the_field_and_rule(
    shop, request_message, expected
) -> None:
    assert await refused(shop, request_message) == expected


async def test_every_violated_field_of_one_request_is_listed(shop) -> None:
    request = orders_pb2.PlaceOrderRequest(
        customer_id="",
        items=[
            orders_pb2.LineItem(sku="a", quantity=0, price_cents=-1),
            BOOK,
            orders_pb2.LineItem(sku="c", quantity=-3, price_cents=1),
        ],
    )
    fields = [field for field, _ in await refused(shop, request)]
    assert fields == [
        "customer_id",
        "items[0].quantity",
        "items[0].price_cents",
        "items[2].quantity",
    ]


async def test_a_valid_order_is_placed(shop) -> None:
    reply = await shop.PlaceOrder(orders_pb2.PlaceOrderRequest(customer_id="alice", items=[BOOK]))
    order = await shop.GetOrder(orders_pb2.GetOrderRequest(order_id=reply.order_id))
    assert (order.customer_id, order.total_cents) == ("alice", 100)


async def test_an_empty_order_id_is_invalid_argument_not_a_lookup(shop) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await shop.GetOrder(orders_pb2.GetOrderRequest(order_id=""))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = bad_request(caught.value)
    assert bad is not None
    assert [v.field for v in bad.field_violations] == ["order_id"]


# ---------------------------------------------------------------- in-process and the pipeline


async def test_a_request_sent_in_process_is_validated_too() -> None:
    async with shop_app.mediator() as mediator:
        with pytest.raises(InvalidArgument) as caught:
            await mediator.send(PlaceOrder(customer_id="alice", items=()))
    assert [v.field for v in caught.value.violations] == ["items"]
    assert str(caught.value) == (
        "shop.orders.v1.PlaceOrderRequest is not valid:"
        " items: must contain at least 1 item(s) [repeated.min_items]"
    )


def test_validation_runs_after_authentication_and_before_the_apps_behaviours() -> None:
    async def audit(message: Any, call_next: Any) -> Any:
        return await call_next(message)

    app = App(
        name="shop",
        services=[orders_pb2],
        routers=[_orders_router()],
        behaviours=[audit],
        authentication=Authentication(StaticTokens({"t": "alice"})),
        validation=Validation(),
        allow_unbound=True,
    )
    pipeline = app.describe().splitlines()[2].strip()
    assert pipeline.startswith("authentication -> validation -> ")
    assert pipeline.endswith("audit -> handler")


async def test_the_apps_behaviours_never_see_an_invalid_request() -> None:
    seen: list[Any] = []

    async def audit(message: Any, call_next: Any) -> Any:
        seen.append(message)
        return await call_next(message)

    app = App(name="t", routers=[_orders_router()], behaviours=[audit], validation=Validation())
    async with app.mediator() as mediator:
        with pytest.raises(InvalidArgument):
            await mediator.send(PlaceOrder(customer_id="", items=()))
        await mediator.send(
            PlaceOrder(customer_id="alice", items=(LineItem(sku="a", quantity=1, price_cents=1),))
        )
    assert [m.customer_id for m in seen] == ["alice"]


def _orders_router() -> Router:
    router = Router("orders")

    @router.handler
    async def place(cmd: PlaceOrder) -> None:
        return None

    return router


def test_the_message_names_the_first_violations_and_counts_the_others() -> None:
    items = [orders_pb2.LineItem(sku="x", quantity=0) for _ in range(2_000)]
    with pytest.raises(InvalidArgument) as caught:
        Validation().check(orders_pb2.PlaceOrderRequest(customer_id="a", items=items))
    assert len(caught.value.violations) == 2_000
    text = str(caught.value)
    assert text.endswith(
        "items[9].quantity: must be greater than or equal to 1 [int32.gte]; and 1990 more"
    )
    assert len(text) <= 1000


def test_fail_fast_stops_at_the_first_violation() -> None:
    request = orders_pb2.PlaceOrderRequest(customer_id="", items=[orders_pb2.LineItem()] * 3)
    with pytest.raises(InvalidArgument) as caught:
        Validation(fail_fast=True).check(request)
    assert len(caught.value.violations) == 1


def test_only_messages_whose_protos_carry_rules_are_checked() -> None:
    assert has_rules(orders_pb2.PlaceOrderRequest.DESCRIPTOR)
    assert has_rules(orders_pb2.Order.DESCRIPTOR)  # through its LineItem
    assert not has_rules(orders_pb2.PlaceOrderResponse.DESCRIPTOR)
    Validation().check(orders_pb2.PlaceOrderResponse())  # nothing to break: no error


def test_validation_of_nothing_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="requests=True, events=True or both"):
        Validation(requests=False, events=False)


# ---------------------------------------------------------------- consumed events


def _payments_app(validation: Validation) -> tuple[App, list[str]]:
    handled: list[str] = []
    router = Router("payments")

    @router.handler
    async def capture(event: OrderPlaced) -> None:
        handled.append(event.order_id)

    return App(name="payments", routers=[router], validation=validation), handled


def _placed(order_id: str) -> OrderPlaced:
    return OrderPlaced(
        order_id=order_id,
        customer_id="alice",
        items=(LineItem(sku="a", quantity=1, price_cents=1),),
        total_cents=1,
        placed_at=dt.datetime.now(dt.UTC),
    )


async def test_a_consumed_event_that_breaks_a_rule_goes_to_the_dlq_with_its_violations() -> None:
    app, handled = _payments_app(Validation(events=True))
    async with AppHarness(app) as harness:
        bad = await harness.deliver(_placed(""))
        good = await harness.deliver(_placed("o-1"))
        assert (await harness.settled(bad.record)).outcome == "dead_lettered"
        await harness.handled(good.record)
        [dead] = harness.dead_letters("shop.orders.v1")
    assert handled == ["o-1"]
    assert dead.error_type == "InvalidArgument"
    assert dead.error_message == (
        "shop.orders.v1.OrderPlaced is not valid:"
        " order_id: must be at least 1 characters [string.min_len]"
    )
    assert dead.attempts == 1  # not retriable


async def test_events_are_not_checked_unless_the_app_asks() -> None:
    app, handled = _payments_app(Validation())
    async with AppHarness(app) as harness:
        published = await harness.deliver(_placed(""))
        await harness.handled(published.record)
    assert handled == [""]


# ---------------------------------------------------------------- the vendored rules


def test_the_vendored_validate_proto_has_the_rules_the_protovalidate_runtime_has() -> None:
    shipped_module = Path(protovalidate.__file__).parent / "_gen/buf/validate/validate_pb.py"
    shipped = descriptor_pb2.FileDescriptorProto.FromString(_file_desc_bytes(shipped_module))
    vendored = descriptor_pb2.FileDescriptorProto.FromString(validate_pb2.DESCRIPTOR.serialized_pb)
    for file in (shipped, vendored):
        file.ClearField("options")  # java/go packages: BSR's managed mode, not rules
        file.ClearField("source_code_info")
        _clear_json_names(file.message_type)
        for field in file.extension:
            field.ClearField("json_name")
    assert vendored == shipped


def _file_desc_bytes(module: Path) -> bytes:
    """The serialized FileDescriptorProto a protobuf-py module passes to ``file_desc``."""
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "file_desc":
            value = node.args[0]
            assert isinstance(value, ast.Constant)
            assert isinstance(value.value, bytes)
            return value.value
    raise AssertionError(f"no file_desc(...) in {module}")


def _clear_json_names(messages: Any) -> None:
    for message in messages:
        for field in [*message.field, *message.extension]:
            field.ClearField("json_name")
        _clear_json_names(message.nested_type)
