"""Reading a request body: bounded, decompressed, one message or a stream of them.

The body is read whole (unary and server-streaming methods take one
request message), at most ``limit`` bytes -- a larger one is
``resource_exhausted`` before it is all read, and one whose
``Content-Length`` says so before any of it is read (both answered with
``connection: close``: the rest of the body is not worth reading). An
enveloped body is one frame whose flags are 0 or ``COMPRESSED`` (a client
sending Connect's end-of-stream or gRPC-Web's trailers flag is told so).
``gzip`` is the one request
compression served (``content-encoding`` for Connect unary,
``connect-content-encoding`` and the envelope's flag for Connect
streaming, ``grpc-encoding`` for gRPC-Web), inflated to ``limit`` at most.

A client-streaming call's body is a sequence of such frames ended by the
body's end (Connect streaming and gRPC-Web alike): :func:`request_frames`
yields each message as soon as its frame has arrived, reading the body
only as the handler asks for messages (uvicorn then stops reading the
socket: the client is slowed, nothing piles up). Each message is bounded by
``limit`` (``resource_exhausted`` once its prefix says more, before its
bytes are read); a frame with other flags, or a body ending inside a frame,
is ``invalid_argument``; a client gone mid-body is :class:`Disconnected`.

Example::

    body = await read_body(receive, headers, "grpc-web", 4 << 20)
    message = single_message(body, headers, "grpc-web", 4 << 20)
    async for message in request_frames(receive, gzip=False, limit=4 << 20):
        ...
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import grpc

from ..gateway.errors import status_of
from .endpoints import Disconnected, Failed
from .protocol import COMPRESSED, next_frame

__all__ = ["Disconnected", "read_body", "request_frames", "single_message"]

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]

_ENCODING_HEADER = {
    "connect": b"content-encoding",
    "connect-stream": b"connect-content-encoding",
    "grpc-web": b"grpc-encoding",
}
_IDENTITY = (None, b"identity")
_PREFIX = struct.Struct(">BI")


def _too_large(limit: int) -> Failed:
    status = status_of(grpc.StatusCode.RESOURCE_EXHAUSTED, f"request larger than {limit} bytes")
    return Failed(status, close=True)


def _invalid(message: str) -> Failed:
    return Failed(status_of(grpc.StatusCode.INVALID_ARGUMENT, message))


def check_length(headers: Mapping[bytes, bytes], limit: int) -> None:
    """Refuse a body whose ``Content-Length`` is above ``limit`` (+ an envelope's prefix)."""
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + 5:
        raise _too_large(limit)


def encoding(headers: Mapping[bytes, bytes], protocol: str) -> bytes | None:
    """The request's compression, ``None`` or ``identity`` or ``gzip`` (``Failed``: another)."""
    encoding = headers.get(_ENCODING_HEADER[protocol])
    if encoding in _IDENTITY or encoding == b"gzip":
        return encoding
    name = encoding.decode("latin-1")[:32] if encoding else ""
    raise Failed(
        status_of(grpc.StatusCode.UNIMPLEMENTED, f"compression {name!r} is not supported (gzip is)")
    )


def _gunzip(data: bytes, limit: int) -> bytes:
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflate.decompress(data, limit + 1)
    except zlib.error:
        raise Failed(status_of(grpc.StatusCode.INVALID_ARGUMENT, "bad gzip data")) from None
    if len(out) > limit:
        raise _too_large(limit)
    return out


async def read_body(
    receive: Receive, headers: Mapping[bytes, bytes], protocol: str, limit: int
) -> bytes:
    """The whole request body, at most ``limit`` bytes (Connect unary: decompressed)."""
    message = await receive()
    body: bytes = message.get("body", b"")
    if message.get("more_body"):
        chunks = [body]
        size = len(body)
        while message.get("more_body"):
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit + 5:
                raise _too_large(limit)
            chunks.append(chunk)
        body = b"".join(chunks)
    elif message["type"] == "http.disconnect":
        raise Disconnected
    if len(body) > limit + 5:  # 5: an envelope's prefix
        raise _too_large(limit)
    if protocol == "connect" and encoding(headers, protocol) == b"gzip":
        return _gunzip(body, limit)
    return body


def single_message(body: bytes, headers: Mapping[bytes, bytes], protocol: str, limit: int) -> bytes:
    """The one enveloped message of a request body (inflated when its flag says so)."""
    frame = next_frame(body)
    if frame is None or frame[2]:
        raise _invalid("the request body must be exactly one enveloped message")
    flags, data, _ = frame
    if flags & ~COMPRESSED:
        raise _invalid(f"a request message's flags are 0 or 1 (compressed), not {flags:#04x}")
    if flags:
        if encoding(headers, protocol) != b"gzip":
            raise _invalid("a compressed message without a compression header")
        return _gunzip(data, limit)
    return data


async def request_frames(receive: Receive, *, gzip: bool, limit: int) -> AsyncIterator[bytes]:
    """The messages of an enveloped request body, each as soon as it has arrived."""
    buffer = bytearray()  # appended to in place: a large message in many chunks copies once
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        buffer += message.get("body", b"")
        more = bool(message.get("more_body"))
        start = 0
        while len(buffer) - start >= 5:
            flags, length = _PREFIX.unpack_from(buffer, start)
            _check_prefix(flags, length, gzip, limit)
            end = start + 5 + length
            if len(buffer) < end:
                break
            data = bytes(buffer[start + 5 : end])
            start = end
            yield _gunzip(data, limit) if flags else data
        del buffer[:start]
    if buffer:
        raise _invalid("the request body ends inside an enveloped message")


def _check_prefix(flags: int, length: int, gzip: bool, limit: int) -> None:
    if flags & ~COMPRESSED:
        raise _invalid(f"a request message's flags are 0 or 1 (compressed), not {flags:#04x}")
    if flags and not gzip:
        raise _invalid("a compressed message without a compression header")
    if length > limit:
        raise _too_large(limit)
