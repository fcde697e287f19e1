"""Bounded cost per request: repeated-field limits, capped error details, no echo of input.

A request may hold no more than ``RequestLimits.max_repeated`` elements in
one repeated field, nor ``max_elements`` across all of its (nested) repeated
fields: beyond that it is INVALID_ARGUMENT with a ``google.rpc.BadRequest``
naming the field and the limit, decided before the request is converted.
Error details are capped (the first violations and a count) and every string
taken from the request is clipped, so the ``grpc-status-details-bin``
trailer stays far below gRPC's 8 KB soft metadata limit.
"""

from __future__ import annotations

import grpc
import grpc.aio
import pytest
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

from examples.shop.app import app
from tests.conftest import bad_request, error_info
from wirebus.testing import AppHarness

DETAILS_KEY = "grpc-status-details-bin"
SOFT_METADATA_LIMIT = 8 * 1024  # grpc core's default soft limit (GRPC_ARG_MAX_METADATA_SIZE)


@pytest.fixture
async def stub():
    """The shop's gateway stub (the gateway's default request limits)."""
    async with AppHarness(app) as harness:
        yield orders_pb2_grpc.OrderServiceStub(await harness.channel())


def trailer_bytes(err: grpc.aio.AioRpcError) -> int:
    """The size of the error's trailing metadata, as the client received it."""
    return sum(len(k) + len(v) for k, v in err.trailing_metadata() or ())


def details_bytes(err: grpc.aio.AioRpcError) -> int:
    return sum(len(v) for k, v in err.trailing_metadata() or () if k == DETAILS_KEY)


def order_of(n: int, item: orders_pb2.LineItem) -> orders_pb2.PlaceOrderRequest:
    request = orders_pb2.PlaceOrderRequest(customer_id="alice")
    request.items.extend(item for _ in range(n))
    return request


async def test_more_items_than_the_limit_is_invalid_argument_naming_the_field_and_the_limit(
    stub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.PlaceOrder(order_of(10_001, orders_pb2.LineItem()))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = bad_request(caught.value)
    assert bad is not None
    [violation] = bad.field_violations
    assert violation.field == "items"
    assert "10001" in violation.description
    assert "10000" in violation.description
    info = error_info(caught.value)
    assert info is not None
    assert (info.reason, info.metadata["field"], info.metadata["limit"]) == (
        "REQUEST_LIMIT_EXCEEDED",
        "items",
        "10000",
    )


async def test_a_million_empty_items_are_refused_before_conversion_with_a_small_trailer(
    stub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.PlaceOrder(order_of(1_000_000, orders_pb2.LineItem()))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in bad_request(caught.value).field_violations] == ["items"]
    assert trailer_bytes(caught.value) < 2048


async def test_as_many_items_as_the_limit_are_placed(stub) -> None:
    reply = await stub.PlaceOrder(order_of(10_000, orders_pb2.LineItem(quantity=1)))
    order = await stub.GetOrder(orders_pb2.GetOrderRequest(order_id=reply.order_id))
    assert len(order.items) == 10_000


async def test_field_violations_are_capped_with_the_total_count_in_error_info(stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.PlaceOrder(order_of(400, orders_pb2.LineItem(sku="x", quantity=0)))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = bad_request(caught.value).field_violations
    assert 1 <= len(violations) <= 50
    assert [v.field for v in violations] == [f"items[{i}].quantity" for i in range(len(violations))]
    info = error_info(caught.value)
    assert info.metadata["violations"] == "400"
    assert info.metadata["violations_shown"] == str(len(violations))
    assert trailer_bytes(caught.value) < SOFT_METADATA_LIMIT


async def test_an_unknown_order_id_of_a_megabyte_is_not_echoed_back(stub) -> None:
    order_id = "x" * (1024 * 1024)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetOrder(orders_pb2.GetOrderRequest(order_id=order_id))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert len(caught.value.details()) < 600
    assert caught.value.details().startswith("order 'xxx")
    assert caught.value.details().endswith("…(1048599 bytes)")  # the whole message's size
    info = error_info(caught.value)
    assert info.reason == "ORDER_NOT_FOUND"
    echoed = info.metadata["order_id"]
    assert echoed.startswith("xxxx")
    assert echoed.endswith("…(1048576 bytes)")
    assert len(echoed) < 200
    assert trailer_bytes(caught.value) < SOFT_METADATA_LIMIT


# ---------------------------------------------------------------- limits, configured


def place_order_route(**limits: int):
    from wirebus import Gateway
    from wirebus.gateway.request_limits import RequestLimits

    [route] = [r for r in Gateway(app).routes if r.method == "PlaceOrder"]
    return route.decoder(RequestLimits(**limits))


def test_the_limits_are_configurable_per_decoder() -> None:
    from wirebus.errors import RequestLimitExceeded

    decode = place_order_route(max_repeated=3, max_elements=3)
    three = order_of(3, orders_pb2.LineItem(quantity=1)).SerializeToString()
    assert len(decode(three).items) == 3
    with pytest.raises(RequestLimitExceeded) as caught:
        decode(order_of(4, orders_pb2.LineItem(quantity=1)).SerializeToString())
    assert (caught.value.field, caught.value.count, caught.value.limit) == ("items", 4, 3)


def test_limits_that_cannot_hold_are_refused_at_construction() -> None:
    from wirebus.errors import ConfigurationError
    from wirebus.gateway.request_limits import RequestLimits

    with pytest.raises(ConfigurationError, match="max_repeated must be positive"):
        RequestLimits(max_repeated=0)
    with pytest.raises(ConfigurationError, match="must be at least max_repeated"):
        RequestLimits(max_repeated=10, max_elements=5)


def test_a_type_without_repeated_fields_gets_no_check() -> None:
    from wirebus.gateway.request_limits import RequestLimits

    assert RequestLimits().checker(orders_pb2.GetOrderRequest.DESCRIPTOR) is None


def test_elements_of_nested_messages_count_against_the_total_with_their_path() -> None:
    from google.protobuf import struct_pb2

    from wirebus.errors import RequestLimitExceeded
    from wirebus.gateway.request_limits import RequestLimits

    outer = struct_pb2.ListValue()
    for _ in range(3):
        inner = outer.values.add().list_value
        inner.values.extend(struct_pb2.Value(number_value=1) for _ in range(4))
    check = RequestLimits(max_repeated=5, max_elements=12).checker(struct_pb2.ListValue.DESCRIPTOR)
    with pytest.raises(RequestLimitExceeded) as caught:
        check(outer)  # 3 + 4 + 4 + 4 = 15 elements in all
    assert caught.value.field == "values[2].list_value.values"
    assert "more than the limit of 12" in str(caught.value)
    check_wide = RequestLimits(max_repeated=3, max_elements=100)
    with pytest.raises(RequestLimitExceeded) as caught:
        check_wide.checker(struct_pb2.ListValue.DESCRIPTOR)(outer)
    assert caught.value.field == "values[0].list_value.values"


def test_map_fields_count_their_entries() -> None:
    from google.protobuf import struct_pb2

    from wirebus.errors import RequestLimitExceeded
    from wirebus.gateway.request_limits import RequestLimits

    struct = struct_pb2.Struct()
    for key in "abc":
        struct.fields[key].list_value.values.add().string_value = key
    struct.fields["z"].struct_value.fields["deep"].list_value.values.extend(
        struct_pb2.Value(bool_value=True) for _ in range(4)
    )
    check = RequestLimits(max_repeated=3, max_elements=100).checker(struct_pb2.Struct.DESCRIPTOR)
    with pytest.raises(RequestLimitExceeded) as caught:
        check(struct)  # four entries in ``fields``
    assert caught.value.field == "fields"
    del struct.fields["a"]
    with pytest.raises(RequestLimitExceeded) as caught:
        check(struct)
    assert caught.value.field == "fields['z'].struct_value.fields['deep'].list_value.values"


async def test_a_handler_of_the_raw_proto_class_is_bounded_too(serve) -> None:
    from wirebus import App, Router

    router = Router("raw")

    @router.handler
    async def place(cmd: orders_pb2.PlaceOrderRequest) -> orders_pb2.PlaceOrderResponse:
        return orders_pb2.PlaceOrderResponse(order_id=str(len(cmd.items)))

    raw = App(name="raw", services=[orders_pb2], routers=[router], allow_unbound=True)
    async with serve(raw) as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        assert (await stub.PlaceOrder(order_of(2, orders_pb2.LineItem()))).order_id == "2"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.PlaceOrder(order_of(10_001, orders_pb2.LineItem()))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in bad_request(caught.value).field_violations] == ["items"]


# ---------------------------------------------------------------- details, capped


def status_of(exc: Exception):
    from google.rpc import status_pb2

    from wirebus.gateway.errors import status_for

    code, message, data = status_for(exc, domain="shop", method="/m")
    return code, message, data, status_pb2.Status.FromString(data)


def unpacked(status, cls):
    for detail in status.details:
        if detail.Is(cls.DESCRIPTOR):
            out = cls()
            detail.Unpack(out)
            return out
    return None


def test_every_string_of_a_domain_error_is_clipped_and_the_status_stays_small() -> None:
    from google.rpc import error_details_pb2

    from wirebus import FieldViolation, InvalidArgument

    huge = "é" * 500_000
    exc = InvalidArgument(
        huge,
        reason=huge,
        metadata={f"{huge}{i}": huge for i in range(100)},
        violations=[FieldViolation(huge, huge) for _ in range(1000)],
    )
    code, message, data, status = status_of(exc)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert len(message.encode()) <= 512
    assert message.endswith("…(1000000 bytes)")
    assert len(data) <= 4096
    info = unpacked(status, error_details_pb2.ErrorInfo)
    assert len(info.reason.encode()) <= 128
    assert len(info.metadata) <= 8
    assert info.metadata["violations"] == "1000"
    bad = unpacked(status, error_details_pb2.BadRequest)
    assert 1 <= len(bad.field_violations) == int(info.metadata["violations_shown"]) <= 50


def test_a_conversion_error_quoting_a_huge_value_is_clipped() -> None:
    from wirebus.errors import ConversionError

    code, message, data, _ = status_of(ConversionError(f"Cmd.id: {'z' * 1_000_000!r} is no UUID"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith("Cmd.id: 'zzz")
    assert len(message.encode()) <= 512
    assert len(data) <= 4096


def test_a_few_violations_are_sent_whole_without_counts() -> None:
    from google.rpc import error_details_pb2

    from wirebus import FieldViolation, InvalidArgument

    exc = InvalidArgument("bad", violations=[FieldViolation("a", "x"), FieldViolation("b", "y")])
    _, message, _, status = status_of(exc)
    bad = unpacked(status, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad.field_violations] == [("a", "x"), ("b", "y")]
    assert message == "bad"
    assert "violations" not in unpacked(status, error_details_pb2.ErrorInfo).metadata
