"""Fuzzing the gateway: any bytes as the request of any of the shop's methods.

For every method of the shop's services (discovered from their descriptors),
hypothesis sends request bytes (random, valid, mutated, deeply nested, with
huge length prefixes or unknown fields; see :mod:`tests.fuzz.wire`) as the
raw request, over a real channel to the shop's gateway on 127.0.0.1. Each
reply is OK or a client error, never UNKNOWN or INTERNAL, never a hang (the
call has a deadline), nothing is logged at ERROR for it, and the gateway
still answers a normal call after it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from hypothesis import given
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

from examples.shop.app import app
from tests.fuzz.conftest import Logged, ThreadedShop
from tests.fuzz.wire import message_bytes, settings_for

pytestmark = pytest.mark.fuzz

CALL_TIMEOUT = 10.0
"""Far above the few ms a call takes: DEADLINE_EXCEEDED means the gateway hung."""

CLIENT_ERRORS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ALREADY_EXISTS,
    }
)
"""What the caller's input may earn: the caller's fault, told as such."""

METHODS = [
    pytest.param(method, id=f"{service.name}.{method.name}")
    for service in app.services
    for method in service.methods
]


@pytest.fixture(scope="module")
def channel(shop: ThreadedShop) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(shop.address) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        yield channel


def call(
    channel: grpc.Channel, method: MethodDescriptor, data: bytes
) -> tuple[grpc.StatusCode, str]:
    """Send ``data`` as the raw request of ``method``; the status it ended with, and details."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    try:
        if method.server_streaming:
            for _ in channel.unary_stream(path)(data, timeout=CALL_TIMEOUT):
                pass
        else:
            channel.unary_unary(path)(data, timeout=CALL_TIMEOUT)
    except grpc.RpcError as err:
        return err.code(), err.details()  # type: ignore[attr-defined]
    return grpc.StatusCode.OK, ""


def still_answers(channel: grpc.Channel) -> None:
    stub = orders_pb2_grpc.OrderServiceStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetOrder(orders_pb2.GetOrderRequest(order_id="no-such-order"), timeout=CALL_TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]


@pytest.mark.parametrize("method", METHODS)
def test_any_request_bytes_get_ok_or_a_client_error_and_the_gateway_goes_on(
    method: MethodDescriptor,
    channel: grpc.Channel,
    logged: Logged,
    fuzz_examples: int,
    figures: list[str],
) -> None:
    codes: dict[str, int] = {}
    logged.take()

    @settings_for(fuzz_examples)
    @given(message_bytes(method.input_type))
    def any_request(data: bytes) -> None:
        code, details = call(channel, method, data)
        assert code in CLIENT_ERRORS | {grpc.StatusCode.OK}, f"{code.name} ({details}) for {data!r}"
        name = code.name
        if code == grpc.StatusCode.INVALID_ARGUMENT and "do not parse" in (details or ""):
            name = "MALFORMED"  # never decoded; any other INVALID_ARGUMENT was decoded
        codes[name] = codes.get(name, 0) + 1
        assert logged.take() == [], f"logged at ERROR for the request {data!r}"

    started = time.monotonic()
    any_request()
    elapsed = time.monotonic() - started
    still_answers(channel)
    examples = sum(codes.values())
    figures.append(
        f"fuzz gateway {method.full_name}: {examples} examples in {elapsed:.1f}s"
        f" ({examples / elapsed:.0f}/s); {dict(sorted(codes.items()))}"
    )
    assert codes.keys() - {"MALFORMED"}  # some requests decoded and reached the pipeline
    assert "INVALID_ARGUMENT" in codes  # and some were garbage
