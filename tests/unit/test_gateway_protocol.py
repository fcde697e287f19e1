"""How the gateway speaks gRPC: errors, bad input, limits, health, reflection, lifecycle."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

import wirebus
from tests.conftest import error_info, status_details
from wirebus import App, CallInfo, Gateway, GatewayConfig, Query, Router

GET = "/shop.orders.v1.OrderService/GetOrder"


def app_with(router: Router, **kwargs: object) -> App:
    return App(name="test", services=[orders_pb2], routers=[router], allow_unbound=True, **kwargs)  # type: ignore[arg-type]


def failing_app(exc: Exception) -> App:
    router = Router()

    @router.handler
    async def get_order(query: orders_pb2.GetOrderRequest) -> orders_pb2.Order:
        raise exc

    return app_with(router)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (wirebus.NotFound("gone"), grpc.StatusCode.NOT_FOUND),
        (wirebus.AlreadyExists("dup"), grpc.StatusCode.ALREADY_EXISTS),
        (wirebus.InvalidArgument("bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (wirebus.FailedPrecondition("state"), grpc.StatusCode.FAILED_PRECONDITION),
        (wirebus.PermissionDenied("no"), grpc.StatusCode.PERMISSION_DENIED),
        (wirebus.Unauthenticated("who"), grpc.StatusCode.UNAUTHENTICATED),
        (wirebus.ResourceExhausted("quota"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (wirebus.Aborted("conflict"), grpc.StatusCode.ABORTED),
        (wirebus.Unavailable("later"), grpc.StatusCode.UNAVAILABLE),
    ],
)
async def test_each_domain_error_becomes_its_status_code_with_error_info(serve, error, code):
    async with serve(failing_app(error)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await orders_pb2_grpc.OrderServiceStub(channel).GetOrder(orders_pb2.GetOrderRequest())
    assert caught.value.code() == code
    assert caught.value.details() == str(error)
    info = error_info(caught.value)
    assert info is not None
    assert (info.reason, info.domain) == (error.reason, "test")
    status = status_details(caught.value)
    assert status is not None
    assert status.code == code.value[0]


async def test_unexpected_exception_is_internal_without_internals_and_logged_on_server(
    serve, caplog
):
    secret = "password=hunter2 at /srv/db.py line 42"
    async with serve(failing_app(RuntimeError(secret))) as channel:
        with (
            caplog.at_level(logging.ERROR, logger="wirebus.gateway.errors"),
            pytest.raises(grpc.aio.AioRpcError) as caught,
        ):
            await orders_pb2_grpc.OrderServiceStub(channel).GetOrder(orders_pb2.GetOrderRequest())
    err = caught.value
    assert err.code() == grpc.StatusCode.INTERNAL
    assert err.details() == "internal error"
    assert "hunter2" not in str(err.trailing_metadata())
    logged = [r for r in caplog.records if r.exc_info]
    assert logged
    assert secret in str(logged[0].exc_info[1])  # type: ignore[index]


async def test_request_bytes_that_do_not_parse_are_invalid_argument_and_server_goes_on(serve):
    router = Router()

    @router.handler
    async def get_order(query: orders_pb2.GetOrderRequest) -> orders_pb2.Order:
        return orders_pb2.Order(order_id=query.order_id)

    async with serve(app_with(router)) as channel:
        raw = channel.unary_unary(GET)
        for garbage in (b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x08"):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await raw(garbage)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "shop.orders.v1.GetOrderRequest" in caught.value.details()
        reply = await orders_pb2_grpc.OrderServiceStub(channel).GetOrder(
            orders_pb2.GetOrderRequest(order_id="still-up")
        )
        assert reply.order_id == "still-up"


async def test_a_request_that_cannot_become_the_message_dataclass_is_invalid_argument(serve):
    class ById(Query[None], proto=orders_pb2.GetOrderRequest):
        order_id: uuid.UUID

    router = Router()

    @router.handler
    async def get_order(query: ById) -> orders_pb2.Order:
        return orders_pb2.Order(order_id=str(query.order_id))

    async with serve(app_with(router)) as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetOrder(orders_pb2.GetOrderRequest(order_id="not-a-uuid"))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a UUID" in caught.value.details()
        good = str(uuid.uuid4())
        assert (await stub.GetOrder(orders_pb2.GetOrderRequest(order_id=good))).order_id == good


async def test_unknown_method_is_unimplemented(serve):
    async with serve(app_with(Router())) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary("/shop.orders.v1.OrderService/Nope")(b"")
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_unbound_method_answers_unimplemented_when_the_app_allows_it(serve):
    async with serve(app_with(Router())) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await orders_pb2_grpc.OrderServiceStub(channel).GetOrder(orders_pb2.GetOrderRequest())
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_start_up_fails_listing_every_unbound_method():
    app = App(services=[orders_pb2], routers=[Router()])
    with pytest.raises(wirebus.ConfigurationError) as caught:
        Gateway(app)
    message = str(caught.value)
    for method in ("PlaceOrder", "GetOrder", "CancelOrder", "ListOrders"):
        assert f"/shop.orders.v1.OrderService/{method}" in message
    assert "allow_unbound" in message


def test_a_coroutine_handler_for_a_streaming_method_fails_start_up():
    router = Router()

    @router.handler
    async def list_orders(query: orders_pb2.ListOrdersRequest) -> orders_pb2.Order:
        return orders_pb2.Order()

    with pytest.raises(wirebus.ConfigurationError, match="ListOrders needs an async generator"):
        Gateway(app_with(router))


def test_a_handler_returning_another_message_than_the_method_answers_fails_start_up():
    router = Router()

    @router.handler
    async def get_order(query: orders_pb2.GetOrderRequest) -> orders_pb2.PlaceOrderResponse:
        return orders_pb2.PlaceOrderResponse()

    with pytest.raises(wirebus.ConfigurationError, match=r"answers shop\.orders\.v1\.Order"):
        Gateway(app_with(router))


def _dbapi_disconnect() -> Exception:
    """What SQLAlchemy raises when the database closed the connection under a query."""
    from sqlalchemy.exc import DBAPIError

    class ConnectionDoesNotExistError(Exception):  # asyncpg's, by name
        pass

    try:
        raise ConnectionDoesNotExistError("connection was closed in the middle of operation")
    except ConnectionDoesNotExistError as driver:
        return DBAPIError("INSERT ...", {}, driver, connection_invalidated=True)


class _Wrapped(Exception):
    pass


def _caused_by(cause: BaseException) -> Exception:
    try:
        raise _Wrapped("while handling") from cause
    except _Wrapped as exc:
        return exc


@pytest.mark.parametrize(
    "error",
    [
        _dbapi_disconnect(),
        ConnectionResetError(104, "Connection reset by peer"),
        ConnectionRefusedError(111, "Connection refused"),
        _caused_by(ConnectionResetError(104, "reset")),
    ],
    ids=["sqlalchemy-invalidated", "reset", "refused", "as-a-cause"],
)
async def test_a_lost_connection_is_unavailable_so_clients_retry(serve, caplog, error):
    async with serve(failing_app(error)) as channel:
        with (
            caplog.at_level(logging.WARNING, logger="wirebus.gateway.errors"),
            pytest.raises(grpc.aio.AioRpcError) as caught,
        ):
            await orders_pb2_grpc.OrderServiceStub(channel).GetOrder(orders_pb2.GetOrderRequest())
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert caught.value.details() == "a service this method needs is unavailable; try again"
    info = error_info(caught.value)
    assert info is not None
    assert info.reason == "CONNECTION_LOST"
    assert any("connection lost" in r.getMessage() for r in caplog.records)


async def test_other_os_errors_stay_internal(serve):
    async with serve(failing_app(FileNotFoundError(2, "No such file", "/srv/x"))) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await orders_pb2_grpc.OrderServiceStub(channel).GetOrder(orders_pb2.GetOrderRequest())
    assert caught.value.code() == grpc.StatusCode.INTERNAL


async def test_a_handler_returning_the_wrong_type_at_run_time_is_internal(serve):
    router = Router()

    @router.handler
    async def get_order(query: orders_pb2.GetOrderRequest):  # type: ignore[no-untyped-def]
        return orders_pb2.PlaceOrderResponse(order_id="x")

    async with serve(app_with(router)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await orders_pb2_grpc.OrderServiceStub(channel).GetOrder(orders_pb2.GetOrderRequest())
    assert caught.value.code() == grpc.StatusCode.INTERNAL


async def test_oversize_request_is_resource_exhausted_and_server_goes_on(serve):
    router = Router()

    @router.handler
    async def get_order(query: orders_pb2.GetOrderRequest) -> orders_pb2.Order:
        return orders_pb2.Order(order_id=query.order_id[:10])

    async with serve(app_with(router), max_message_bytes=1024) as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetOrder(orders_pb2.GetOrderRequest(order_id="x" * 4096))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (
            await stub.GetOrder(orders_pb2.GetOrderRequest(order_id="small"))
        ).order_id == "small"


async def test_stream_failing_midway_delivers_earlier_items_then_the_mapped_status(serve):
    router = Router()

    @router.handler
    async def list_orders(query: orders_pb2.ListOrdersRequest) -> AsyncIterator[orders_pb2.Order]:
        yield orders_pb2.Order(order_id="1")
        yield orders_pb2.Order(order_id="2")
        raise wirebus.Unavailable("store went away")

    async with serve(app_with(router)) as channel:
        got: list[str] = []

        async def drain() -> None:
            stream = orders_pb2_grpc.OrderServiceStub(channel).ListOrders(
                orders_pb2.ListOrdersRequest()
            )
            async for order in stream:
                got.append(order.order_id)

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await drain()
    assert got == ["1", "2"]
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_handler_can_inject_call_metadata_peer_and_deadline(serve):
    seen: list[CallInfo] = []
    router = Router()

    @router.handler
    async def get_order(query: orders_pb2.GetOrderRequest, call: CallInfo) -> orders_pb2.Order:
        seen.append(call)
        return orders_pb2.Order()

    async with serve(app_with(router)) as channel:
        await orders_pb2_grpc.OrderServiceStub(channel).GetOrder(
            orders_pb2.GetOrderRequest(), metadata=(("x-tenant", "acme"),), timeout=30
        )
    assert len(seen) == 1, seen
    call = seen[0]
    assert call.method == GET, call
    assert call.metadata["x-tenant"] == "acme"
    assert call.peer.startswith(("ipv4:127.0.0.1", "ipv6:")), call
    remaining = call.time_remaining()
    assert remaining is not None, call
    # the client's 30 s, as the server sees it: grpc core sends the timeout in the
    # grpc-timeout header rounded up to a few significant digits (about 1 %: 30.1 s
    # for 30 s, 1010 s for 1000 s) whenever the call is not the process's first, so
    # the server may see a little more than the client asked for
    assert 20 < remaining <= 30 * 1.01, (remaining, call)


async def test_health_reports_serving_overall_and_per_service(serve):
    async with serve(app_with(Router())) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "shop.orders.v1.OrderService"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
async def test_reflection_lists_services_and_serves_their_descriptors(serve, version):
    path = f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo"
    async with serve(app_with(Router())) as channel:
        call = channel.stream_stream(
            path,
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )

        async def requests() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
            yield reflection_pb2.ServerReflectionRequest(list_services="")
            yield reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="shop.orders.v1.OrderService"
            )

        replies = [r async for r in call(requests())]
    services = {s.name for s in replies[0].list_services_response.service}
    assert {"shop.orders.v1.OrderService", "grpc.health.v1.Health"} <= services
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in replies[1].file_descriptor_response.file_descriptor_proto
    ]
    assert "shop/orders/v1/orders.proto" in {f.name for f in files}


async def test_in_flight_call_finishes_during_graceful_stop():
    started = asyncio.Event()
    router = Router()

    @router.handler
    async def get_order(query: orders_pb2.GetOrderRequest) -> orders_pb2.Order:
        started.set()
        await asyncio.sleep(0.3)
        return orders_pb2.Order(order_id="finished")

    gateway = Gateway(app_with(router), GatewayConfig(port=0, grace_seconds=5))
    await gateway.start()
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        call = asyncio.ensure_future(
            orders_pb2_grpc.OrderServiceStub(channel).GetOrder(orders_pb2.GetOrderRequest())
        )
        await started.wait()
        await gateway.stop()
        assert (await call).order_id == "finished"


async def test_gateway_stop_is_idempotent_and_a_stopped_gateway_cannot_restart():
    gateway = Gateway(app_with(Router()), GatewayConfig(port=0))
    async with gateway:
        with pytest.raises(wirebus.LifecycleError):
            await gateway.start()
    await gateway.stop()
    with pytest.raises(wirebus.LifecycleError):
        await gateway.start()


def test_gateway_config_rejects_impossible_values():
    with pytest.raises(wirebus.ConfigurationError, match="port"):
        GatewayConfig(port=70000)
    with pytest.raises(wirebus.ConfigurationError, match="max_message_bytes"):
        GatewayConfig(max_message_bytes=0)
