"""Server reflection describes what the gateway serves, and nothing else in the process.

The served services' files and their transitive dependencies are answered
(v1 and v1alpha); a file loaded in the process for another reason, such as
the schema of a service this gateway does not serve, is NOT_FOUND; and
``GatewayConfig(reflection=False)`` turns reflection off (UNIMPLEMENTED).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import grpc
import grpc.aio
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2
from shop.orders.v1 import orders_pb2
from shop.payments.v1 import payments_pb2

from wirebus import App, Router

HIDDEN_FILE = "wirebus/testing/v1/hidden.proto"
HIDDEN_SERVICE = "wirebus.testing.v1.HiddenService"
NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]
VERSIONS = ["v1", "v1alpha"]
REFLECTION_FILES = {  # grpcio-reflection names its v1alpha file so
    "v1": "grpc/reflection/v1/reflection.proto",
    "v1alpha": "grpc_reflection/v1alpha/reflection.proto",
}


def load_a_service_that_is_not_served() -> None:
    """Put ``HiddenService`` in the process's default pool, as any imported ``_pb2`` does."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(HIDDEN_FILE)
    except KeyError:
        proto = descriptor_pb2.FileDescriptorProto(
            name=HIDDEN_FILE, package="wirebus.testing.v1", syntax="proto3"
        )
        proto.message_type.add(name="Secret")
        service = proto.service.add(name="HiddenService")
        service.method.add(
            name="Reveal",
            input_type=".wirebus.testing.v1.Secret",
            output_type=".wirebus.testing.v1.Secret",
        )
        pool.AddSerializedFile(proto.SerializeToString())


def orders_app() -> App:
    load_a_service_that_is_not_served()
    assert payments_pb2.DESCRIPTOR.name  # the payments schema is loaded too
    return App(name="test", services=[orders_pb2], routers=[Router()], allow_unbound=True)


async def reflect(
    channel: grpc.aio.Channel,
    version: str,
    requests: Sequence[reflection_pb2.ServerReflectionRequest],
) -> list[reflection_pb2.ServerReflectionResponse]:
    call = channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )

    async def stream() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        for request in requests:
            yield request

    return [reply async for reply in call(stream())]


def file_names(reply: reflection_pb2.ServerReflectionResponse) -> set[str]:
    raw = reply.file_descriptor_response.file_descriptor_proto
    return {descriptor_pb2.FileDescriptorProto.FromString(r).name for r in raw}


@pytest.mark.parametrize("version", VERSIONS)
async def test_files_of_services_not_served_are_not_found(serve, version):
    async with serve(orders_app()) as channel:
        replies = await reflect(
            channel,
            version,
            [
                reflection_pb2.ServerReflectionRequest(file_by_filename=HIDDEN_FILE),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol=HIDDEN_SERVICE),
                reflection_pb2.ServerReflectionRequest(
                    file_by_filename="shop/payments/v1/payments.proto"
                ),
                reflection_pb2.ServerReflectionRequest(
                    file_containing_symbol="shop.payments.v1.PaymentCaptured"
                ),
            ],
        )
    assert [r.error_response.error_code for r in replies] == [NOT_FOUND] * 4


@pytest.mark.parametrize("version", VERSIONS)
async def test_served_files_come_with_their_dependencies(serve, version):
    async with serve(orders_app()) as channel:
        replies = await reflect(
            channel,
            version,
            [
                reflection_pb2.ServerReflectionRequest(
                    file_by_filename="shop/orders/v1/orders.proto"
                ),
                reflection_pb2.ServerReflectionRequest(
                    file_by_filename="google/protobuf/timestamp.proto"
                ),
                reflection_pb2.ServerReflectionRequest(
                    file_containing_symbol="shop.orders.v1.PlaceOrderRequest"
                ),
                reflection_pb2.ServerReflectionRequest(
                    file_containing_symbol="grpc.health.v1.Health"
                ),
                reflection_pb2.ServerReflectionRequest(
                    file_containing_symbol=f"grpc.reflection.{version}.ServerReflection"
                ),
            ],
        )
    orders, timestamp, request, health, reflection = (file_names(r) for r in replies)
    assert (
        orders
        == request
        == {
            "shop/orders/v1/orders.proto",
            "google/protobuf/timestamp.proto",
            # the buf.validate annotations' file, and what it imports
            "buf/validate/validate.proto",
            "google/protobuf/descriptor.proto",
            "google/protobuf/duration.proto",
            "google/protobuf/field_mask.proto",
        }
    )
    assert timestamp == {"google/protobuf/timestamp.proto"}
    assert health == {"grpc_health/v1/health.proto"}
    assert reflection == {REFLECTION_FILES[version]}


@pytest.mark.parametrize("version", VERSIONS)
async def test_list_services_lists_only_the_served_ones(serve, version):
    async with serve(orders_app()) as channel:
        (reply,) = await reflect(
            channel, version, [reflection_pb2.ServerReflectionRequest(list_services="")]
        )
    assert {s.name for s in reply.list_services_response.service} == {
        "shop.orders.v1.OrderService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }


@pytest.mark.parametrize("version", VERSIONS)
async def test_reflection_off_is_unimplemented(serve, version):
    async with serve(orders_app(), reflection=False) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await reflect(
                channel, version, [reflection_pb2.ServerReflectionRequest(list_services="")]
            )
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
