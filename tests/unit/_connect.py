"""A tiny HTTP/1.1 client for the Connect port's tests (the way curl or a browser calls).

One request per connection (``Connection: close``); the response is read to
its end and de-chunked. ``frames`` splits an enveloped body (streaming
Connect, gRPC-Web) into ``(flags, bytes)``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import struct
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit


@dataclasses.dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def request(
    url: str,
    body: bytes = b"",
    *,
    content_type: str | None = "application/json",
    headers: Mapping[str, str] | None = None,
    method: str = "POST",
) -> Response:
    """Send one request to ``url`` and read the whole response."""
    reader, writer = await open_request(url, body, content_type, headers, method)
    try:
        raw = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    return parse(raw)


async def open_request(
    url: str,
    body: bytes,
    content_type: str | None,
    headers: Mapping[str, str] | None,
    method: str = "POST",
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Send a request; the caller reads the response from the returned reader."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    lines = [f"{method} {parts.path} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    await writer.drain()
    return reader, writer


def parse(raw: bytes) -> Response:
    head, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in header_lines:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        rest = _dechunk(rest)
    return Response(int(status_line.split()[1]), headers, rest)


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return bytes(out)


def envelope(data: bytes, flags: int = 0) -> bytes:
    return struct.pack(">BI", flags, len(data)) + data


def frames(body: bytes) -> list[tuple[int, bytes]]:
    out = []
    while body:
        flags, length = struct.unpack(">BI", body[:5])
        out.append((flags, body[5 : 5 + length]))
        body = body[5 + length :]
    return out


def trailers(frame: bytes) -> dict[str, str]:
    """The header lines of a gRPC-Web trailers frame."""
    out = {}
    for line in frame.decode("latin-1").split("\r\n"):
        if line:
            key, _, value = line.partition(":")
            out[key.strip().lower()] = value.strip()
    return out
