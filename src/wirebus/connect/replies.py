"""How the Connect port answers a call: Connect unary, or enveloped (Connect streaming, gRPC-Web).

- :class:`ConnectUnary`: the message with ``200``, or Connect's JSON error
  with the spec's HTTP status;
- :class:`Enveloped`: enveloped messages, then Connect's end-of-stream
  message (``{}`` or ``{"error": ...}``) or gRPC-Web's trailers frame --
  a unary or client-streaming call's one reply is one message and the end.

Example::

    reply = Enveloped(send, b"application/connect+proto", cors=[], connect=True)
    await reply.unary(response_bytes, endpoint)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any, Protocol

from .codec import Codec, JsonCodec, response_type
from .errors import Status, connect_error, end_stream, grpc_web_trailers
from .protocol import END_STREAM, TRAILERS, envelope

__all__ = ["CLOSE", "JSON", "AnyEndpoint", "ConnectUnary", "Enveloped", "Reply", "respond"]

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON = (b"content-type", b"application/json")
CLOSE = (b"connection", b"close")
PROTOCOL_VERSION = (b"connect-protocol-version", b"1")


class AnyEndpoint(Protocol):
    """What the replies and the app need of an endpoint (``Endpoint``, ``HealthEndpoint``)."""

    path: str
    streaming: bool
    client_streaming: bool
    refusal: Status | None
    json: JsonCodec

    def decode_json(self, body: bytes) -> bytes: ...
    async def unary(self, data: bytes, seconds: float | None) -> bytes: ...
    def stream(self, data: bytes, seconds: float | None) -> AsyncIterator[bytes]: ...
    async def client_stream(
        self,
        frames: AsyncIterator[bytes],
        seconds: float | None,
        *,
        json: bool,
        received: Callable[[], None] | None = None,
    ) -> bytes: ...


class Reply(Protocol):
    """How a call is answered in its protocol."""

    async def unary(self, data: bytes, endpoint: AnyEndpoint) -> None: ...
    async def begin(self) -> None: ...
    async def item(self, data: bytes, endpoint: AnyEndpoint) -> None: ...
    async def end(self, status: Status | None) -> None: ...
    async def error(self, status: Status, *, close: bool = False) -> None: ...


class ConnectUnary:
    """Connect's unary responses: the message, or a JSON error with its HTTP status."""

    __slots__ = ("_codec", "_cors", "_ok", "_send")

    def __init__(self, send: Send, codec: Codec, cors: Headers) -> None:
        self._send, self._codec, self._cors = send, codec, cors
        self._ok = [(b"content-type", response_type("connect", codec)), PROTOCOL_VERSION, *cors]

    async def unary(self, data: bytes, endpoint: AnyEndpoint) -> None:
        if self._codec == "json":
            data = endpoint.json.response(data)
        await respond(self._send, 200, self._ok, data)

    async def error(self, status: Status, *, close: bool = False) -> None:
        code, body = connect_error(status)
        headers = [JSON, PROTOCOL_VERSION, *self._cors]
        if close:
            headers.append(CLOSE)
        await respond(self._send, code, headers, body)

    async def begin(self) -> None:
        raise AssertionError("a Connect unary reply has no stream")  # server-streaming is refused

    async def item(self, data: bytes, endpoint: AnyEndpoint) -> None:
        raise AssertionError("a Connect unary reply has no stream")

    async def end(self, status: Status | None) -> None:
        raise AssertionError("a Connect unary reply has no stream")


class Enveloped:
    """Streaming Connect and gRPC-Web: enveloped messages, then the end of the stream."""

    __slots__ = ("_connect", "_headers", "_json", "_send", "_started")

    def __init__(self, send: Send, ctype: bytes, cors: Headers, *, connect: bool) -> None:
        self._send, self._connect = send, connect
        self._json = ctype.endswith(b"json")
        self._headers = [(b"content-type", ctype), *cors]
        if connect:
            self._headers.append(PROTOCOL_VERSION)
        self._started = False

    async def begin(self) -> None:
        self._started = True
        await self._send({"type": "http.response.start", "status": 200, "headers": self._headers})

    async def item(self, data: bytes, endpoint: AnyEndpoint) -> None:
        if self._json:
            data = endpoint.json.response(data)
        await self._send({"type": "http.response.body", "body": envelope(data), "more_body": True})

    async def end(self, status: Status | None) -> None:
        if not self._started:
            await self.begin()
        if self._connect:
            frame = envelope(end_stream(status), END_STREAM)
        else:
            frame = envelope(grpc_web_trailers(status), TRAILERS)
        await self._send({"type": "http.response.body", "body": frame})

    async def unary(self, data: bytes, endpoint: AnyEndpoint) -> None:
        await self.begin()
        await self.item(data, endpoint)
        await self.end(None)

    async def error(self, status: Status, *, close: bool = False) -> None:
        if close and not self._started:
            self._headers = [*self._headers, CLOSE]
        await self.end(status)


async def respond(send: Send, status: int, headers: Headers, body: bytes) -> None:
    headers = [*headers, (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
