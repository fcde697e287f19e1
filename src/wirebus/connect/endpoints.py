"""One endpoint per route: protobuf bytes in, the mediator, protobuf bytes out.

An endpoint is built once per route at start-up from the same pieces the
gRPC port's method handlers use -- ``MethodRoute.decoder`` (limits,
``from_proto``), the mediator's compiled runner, the gateway's encoder and
``status_for`` -- so validation, authentication, tracing, the app's
behaviours and the unit of work run identically on both ports. A
client-streaming endpoint hands the mediator's ``client_stream_runner`` a
:class:`~wirebus.pipeline.MessageStream` that decodes each request frame
(``RequestLimits``, ``from_proto``) only when the handler asks for it, as
the gRPC port's ``gateway/streaming.py`` does. The protocols (``app.py``)
only move bytes. Failures raise :class:`Failed` carrying the gateway's
status.

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
from ..pipeline import MessageStream
from .codec import JsonCodec
from .errors import Status, malformed_json

if TYPE_CHECKING:
    from ..gateway.limits import CallLimiter
    from ..mediator import Mediator

__all__ = ["Disconnected", "Endpoint", "Failed", "HealthEndpoint"]

_SERVED = ("unary_unary", "unary_stream", "stream_unary")
_BIDI = "bidirectional streaming needs HTTP/2: call the gRPC port"


class Failed(WirebusError):
    """A call ended with the gateway's ``status`` (``close``: and its connection must close)."""

    def __init__(self, status: Status, *, close: bool = False) -> None:
        super().__init__(status[1])
        self.status = status
        self.close = close


class Disconnected(WirebusError):
    """The client went away before its request was read."""


class Endpoint:
    """The bytes-level call of one route.

    ``streaming``: a server-streaming method; ``client_streaming``: a
    client-streaming one (:meth:`client_stream`).
    """

    __slots__ = (
        "_collect",
        "_decode",
        "_domain",
        "_encode",
        "_fail",
        "_full_name",
        "_message_type",
        "_open",
        "_run",
        "client_streaming",
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
        self.client_streaming = route.arity == "stream_unary"
        self.json = JsonCodec(route.request_proto, route.response_proto)
        self._full_name = route.request_proto.DESCRIPTOR.full_name
        self._domain = domain
        self._fail = functools.partial(status_for, domain=domain, method=route.path)
        self.refusal = _refusal(route)
        self._run: Callable[[Any], Awaitable[Any]] | None = None
        self._open: Callable[[Any], Awaitable[AsyncIterator[Any]]] | None = None
        self._collect: Callable[[Any], Awaitable[Any]] | None = None
        if self.refusal is None:
            assert route.spec is not None
            self._decode = route.decoder(limits)
            self._encode = encoder_of(route)
            self._message_type = route.spec.message_type
            if self.client_streaming:
                self._collect = mediator.client_stream_runner(route.spec.message_type)
            elif self.streaming:
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

    async def client_stream(
        self,
        frames: AsyncIterator[bytes],
        seconds: float | None,
        *,
        json: bool,
        received: Callable[[], None] | None = None,
    ) -> bytes:
        """Run the handler on the messages of ``frames``; the response's bytes.

        Each frame is counted (``received``) and decoded (JSON first when
        ``json``) as the handler reads it; ``Failed`` (its status) or
        ``Disconnected`` end the call, and the handler's unit of work rolls
        back.
        """
        assert self._collect is not None
        decoded = self._messages(frames, json=json, received=received)
        messages = MessageStream(self._message_type, decoded)
        try:
            if seconds is None:
                return self._encode(await self._collect(messages))
            return self._encode(await run_bounded(self._collect, messages, seconds))
        except (asyncio.CancelledError, Failed, Disconnected):
            raise
        except Exception as exc:
            raise Failed(self._fail(exc)) from None
        finally:
            await messages.aclose()

    async def _messages(
        self, frames: AsyncIterator[bytes], *, json: bool, received: Callable[[], None] | None
    ) -> AsyncIterator[Any]:
        try:
            async for data in frames:
                if received is not None:
                    received()
                yield self._message(self.decode_json(data) if json else data)
        finally:  # closed with the stream, not left to the GC
            aclose = getattr(frames, "aclose", None)
            if aclose is not None:
                await aclose()


def _refusal(route: MethodRoute) -> Status | None:
    """The status of a route this port cannot serve, ``None`` when it serves it."""
    if route.arity not in _SERVED:
        return status_of(grpc.StatusCode.UNIMPLEMENTED, f"{route.path}: {_BIDI}")
    if route.spec is None:
        return status_of(grpc.StatusCode.UNIMPLEMENTED, f"{route.path} is not implemented")
    return None


class HealthEndpoint:
    """``grpc.health.v1.Health/Check`` over Connect: SERVING until the port drains."""

    path = "/grpc.health.v1.Health/Check"
    streaming = False
    client_streaming = False
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

    async def client_stream(
        self,
        frames: AsyncIterator[bytes],
        seconds: float | None,
        *,
        json: bool,
        received: Callable[[], None] | None = None,
    ) -> bytes:
        """Not a client-streaming method."""
        raise Failed(status_of(grpc.StatusCode.UNIMPLEMENTED, "Health/Check is unary"))
