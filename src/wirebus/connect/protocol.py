"""The wire formats of the Connect protocol and gRPC-Web, as plain functions.

- Status codes: gRPC's codes by their Connect names (``invalid_argument``,
  ``canceled``, ...) and the HTTP status the Connect spec gives each.
- Envelopes: streaming Connect and gRPC-Web carry each message as one byte of
  flags, a 4-byte big-endian length and the bytes; ``END_STREAM`` (Connect)
  and ``TRAILERS`` (gRPC-Web) flag the last frame.
- Timeouts: ``connect-timeout-ms`` (milliseconds) and ``grpc-timeout``
  (digits and a unit, ``10S``, ``250m``) become seconds.

Example::

    frame = envelope(b"...")                    # b"\\x00\\x00\\x00\\x00\\x03..."
    flags, data, rest = next_frame(frame)
    seconds = grpc_timeout(b"250m")             # 0.25
"""

from __future__ import annotations

import struct

import grpc

__all__ = [
    "COMPRESSED",
    "END_STREAM",
    "TRAILERS",
    "code_name",
    "connect_timeout",
    "envelope",
    "grpc_timeout",
    "http_status",
    "next_frame",
]

COMPRESSED = 0x01
"""The envelope flag of a compressed message."""
END_STREAM = 0x02
"""The Connect envelope flag of the end-of-stream message (JSON)."""
TRAILERS = 0x80
"""The gRPC-Web frame flag of the trailers (HTTP/1 header lines)."""

_HEADER = struct.Struct(">BI")

_NAMES = {code: code.name.lower() for code in grpc.StatusCode}
_NAMES[grpc.StatusCode.CANCELLED] = "canceled"  # Connect's spelling

# The Connect spec's HTTP status of each code (unary responses and unary errors).
_HTTP = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

_UNITS = {ord("H"): 3600.0, ord("M"): 60.0, ord("S"): 1.0, ord("m"): 1e-3, ord("u"): 1e-6}
_UNITS[ord("n")] = 1e-9


def code_name(code: grpc.StatusCode) -> str:
    """The Connect name of ``code``: ``grpc.StatusCode.CANCELLED`` -> ``"canceled"``."""
    return _NAMES[code]


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status of a Connect unary error with ``code`` (the Connect spec's table)."""
    return _HTTP.get(code, 500)


def envelope(data: bytes, flags: int = 0) -> bytes:
    """``data`` framed as one enveloped message."""
    return _HEADER.pack(flags, len(data)) + data


def next_frame(buffer: bytes) -> tuple[int, bytes, bytes] | None:
    """``(flags, message, rest)`` of the first whole frame in ``buffer``, ``None`` if partial."""
    if len(buffer) < 5:
        return None
    flags, length = _HEADER.unpack_from(buffer)
    end = 5 + length
    if len(buffer) < end:
        return None
    return flags, buffer[5:end], buffer[end:]


def connect_timeout(value: bytes | None) -> float | None:
    """Seconds of a ``connect-timeout-ms`` header; ``None`` if absent; ``ValueError`` if bad."""
    if value is None:
        return None
    if not value.isdigit() or len(value) > 10:
        raise ValueError(f"connect-timeout-ms must be 1 to 10 digits, not {_shown(value)}")
    return int(value) / 1000.0


def grpc_timeout(value: bytes | None) -> float | None:
    """Seconds of a ``grpc-timeout`` (``"10S"``); ``None`` if absent; ``ValueError`` if bad."""
    if value is None:
        return None
    digits, unit = value[:-1], value[-1:] or b"?"
    if not digits.isdigit() or len(digits) > 8 or unit[0] not in _UNITS:
        raise ValueError(f"grpc-timeout must be up to 8 digits and a unit, not {_shown(value)}")
    return int(digits) * _UNITS[unit[0]]


def _shown(value: bytes) -> str:
    """A header's value in an error message: quoted text, at most 16 characters."""
    return repr(value[:16].decode("latin-1"))
