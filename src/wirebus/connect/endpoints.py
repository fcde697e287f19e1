"""One endpoint per route: protobuf bytes in, the mediator, protobuf bytes out.

An endpoint is built once per route at start-up from the same pieces the
gRPC port's method handlers use -- ``MethodRoute.decoder`` (limits,
``from_proto``), the mediator's compiled runner, the gateway's encoder and
``status_for`` -- so validation, authentication, tracing, the app's
behaviours and the unit of work run identically on both ports. The
protocols (``app.py``) only move bytes. Failures raise :class:`Failed`
carrying the gateway's status.

Example::

    endpoint = Endpoint(route, mediator, domain="shop", limits=DEFAULT_LIMITS)
    reply = await endpoint.unary(request_bytes, timeout=None)
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2

from ..errors import ConversionError, WirebusError
from ..gateway.binding import MethodRoute
from ..gateway.callpath import deadline_passed, encoder_of, run_bounded
from ..gateway.errors import malformed_request, status_for, status_of
from ..gateway.request_limits import RequestLimits
from .codec import JsonCodec
from .errors import Status, malformed_json

if TYPE_CHECKING:
    from ..gateway.limits import CallLimiter
    from ..mediator import Mediator

__all__ = ["Endpoint", "Failed", "HealthEndpoint"]

_SERVED = ("unary_unary", "unary_stream")


class Failed(WirebusError):
    """A call ended with the gateway's ``status`` (``close``: and its connection must close)."""

    def __init__(self, status: Status, *, close: bool = False) -> None:
        super().__init__(status[1])
        self.status = status
        self.close = close


class Endpoint:
    """The bytes-level call of one route (``streaming``: a server-streaming method)."""

    __slots__ = (
        "_decode",
        "_domain",
        "_encode",
        "_fail",
        "_full_name",
        "_open",
        "_run",
        "json",
        "path",
        "refusal",
        "streaming",
    )

    def __init__(
        self, route: MethodRoute, mediator: Mediator, *, domain: str, limits: RequestLimits
    ) -> None:
        self.path = route.path
        self.streaming = route.arity == "unary_stream"
        self.json = JsonCodec(route.request_proto, route.response_proto)
        self._full_name = route.request_proto.DESCRIPTOR.full_name
        self._domain = domain
        self._fail = functools.partial(status_for, domain=domain, method=route.path)
        self.refusal = _refusal(route)
        self._run: Callable[[Any], Awaitable[Any]] | None = None
        self._open: Callable[[Any], Awaitable[AsyncIterator[Any]]] | None = None
        if self.refusal is None:
            assert route.spec is not None
            self._decode = route.decoder(limits)
            self._encode = encoder_of(route)
            if self.streaming:
                self._open = mediator.stream_runner(route.spec.message_type)
            else:
                self._run = mediator.runner(route.spec.message_type)

    def decode_json(self, body: bytes) -> bytes:
        """The request's protobuf bytes from JSON (``Failed``: it does not fit)."""
        try:
            return self.json.request(body)
        except DecodeError as exc:
            raise Failed(malformed_json(self._full_name, str(exc), domain=self._domain)) from None

    def _message(self, data: bytes) -> Any:
        try:
            return self._decode(data)
        except DecodeError:
            raise Failed(malformed_request(self._full_name, domain=self._domain)) from None
        except ConversionError as exc:
            raise Failed(self._fail(exc)) from None

    async def unary(self, data: bytes, seconds: float | None) -> bytes:
        """Run the handler on ``data``; the response's bytes (``Failed``: its status)."""
        assert self._run is not None
        message = self._message(data)
        try:
            if seconds is None:
                return self._encode(await self._run(message))
            return self._encode(await run_bounded(self._run, message, seconds))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise Failed(self._fail(exc)) from None

    async def stream(self, data: bytes, seconds: float | None) -> AsyncIterator[bytes]:
        """The handler's items as bytes, bounded by ``seconds`` (``Failed``: its status)."""
        assert self._open is not None
        message = self._message(data)
        scope = asyncio.timeout(seconds)
        try:
            async with scope:
                items = await self._open(message)
                async for item in items:
                    yield self._encode(item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise Failed(self._fail(deadline_passed(exc, scope))) from None


def _refusal(route: MethodRoute) -> Status | None:
    """The status of a route this port cannot serve, ``None`` when it serves it."""
    if route.arity not in _SERVED:
        return status_of(
            grpc.StatusCode.UNIMPLEMENTED,
            f"{route.path} is {route.arity.replace('_', '-')} streaming, which needs HTTP/2"
            " full-duplex: call it on the gRPC port (the Connect port serves unary and"
            " server-streaming methods)",
        )
    if route.spec is None:
        return status_of(grpc.StatusCode.UNIMPLEMENTED, f"{route.path} is not implemented")
    return None


class HealthEndpoint:
    """``grpc.health.v1.Health/Check`` over Connect: SERVING until the port drains."""

    path = "/grpc.health.v1.Health/Check"
    streaming = False
    refusal: Status | None = None

    def __init__(self, services: frozenset[str], limiter: CallLimiter) -> None:
        self.json = JsonCodec(health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse)
        self._services = services | {""}
        self._limiter = limiter

    def decode_json(self, body: bytes) -> bytes:
        """The request's protobuf bytes from JSON."""
        try:
            return self.json.request(body)
        except DecodeError as exc:
            raise Failed(status_of(grpc.StatusCode.INVALID_ARGUMENT, str(exc))) from None

    async def unary(self, data: bytes, seconds: float | None) -> bytes:
        """SERVING or NOT_SERVING for the service asked of; NOT_FOUND for one not served."""
        try:
            service = health_pb2.HealthCheckRequest.FromString(data).service
        except DecodeError:
            raise Failed(status_of(grpc.StatusCode.INVALID_ARGUMENT, "bad request")) from None
        if service not in self._services:
            raise Failed(status_of(grpc.StatusCode.NOT_FOUND, f"unknown service {service[:128]}"))
        status = health_pb2.HealthCheckResponse.SERVING
        if self._limiter.draining:
            status = health_pb2.HealthCheckResponse.NOT_SERVING
        reply: bytes = health_pb2.HealthCheckResponse(status=status).SerializeToString()
        return reply

    def stream(self, data: bytes, seconds: float | None) -> AsyncIterator[bytes]:
        """Not a streaming method."""
        raise Failed(status_of(grpc.StatusCode.UNIMPLEMENTED, "Health/Check is unary"))
