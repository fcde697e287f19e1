"""The gateway's statuses in Connect's and gRPC-Web's error formats.

Every error starts as the gRPC gateway's ``(code, message, google.rpc.Status
bytes)`` from :func:`wirebus.gateway.errors.status_for` -- the one place
exceptions are mapped -- so both ports send the same code, message and
details (``BadRequest``, ``ErrorInfo``, ...), bounded the same way, with no
internals.

- Connect unary: the HTTP status of the Connect spec's table and a JSON
  body ``{"code", "message", "details": [{"type", "value", "debug"}]}``,
  ``value`` the detail's bytes in unpadded base64, ``debug`` its JSON.
- Connect streaming: the same object as ``"error"`` of the end-of-stream
  message.
- gRPC-Web: ``grpc-status``, ``grpc-message`` (percent-encoded) and
  ``grpc-status-details-bin`` (base64) in the trailers frame.

Example::

    status, body = connect_error(status_for(exc, domain="shop", method=path))
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from typing import Any

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2

from ..gateway.errors import clip
from .protocol import code_name, http_status

__all__ = [
    "Status",
    "connect_error",
    "error_object",
    "grpc_web_trailers",
    "malformed_json",
]

Status = tuple[grpc.StatusCode, str, bytes]
"""``(code, message, serialized google.rpc.Status)``, as ``status_for`` returns it."""

_DETAIL_TYPES = {  # the detail messages the gateway sends, for their "debug" JSON
    d.DESCRIPTOR.full_name: d
    for d in (
        error_details_pb2.BadRequest,
        error_details_pb2.ErrorInfo,
        error_details_pb2.RetryInfo,
        error_details_pb2.PreconditionFailure,
        error_details_pb2.ResourceInfo,
        error_details_pb2.QuotaFailure,
    )
}


def _unpadded(data: bytes) -> str:
    return base64.b64encode(data).rstrip(b"=").decode()


def _detail(packed: Any) -> dict[str, Any]:
    name = packed.type_url.rpartition("/")[2]
    detail: dict[str, Any] = {"type": name, "value": _unpadded(packed.value)}
    cls = _DETAIL_TYPES.get(name)
    if cls is not None:
        detail["debug"] = json_format.MessageToDict(cls.FromString(packed.value))
    return detail


def error_object(status: Status) -> dict[str, Any]:
    """The Connect error object of ``status`` (``details`` only when there are some)."""
    code, message, data = status
    error: dict[str, Any] = {"code": code_name(code), "message": message}
    details = status_pb2.Status.FromString(data).details if data else ()
    if details:
        error["details"] = [_detail(d) for d in details]
    return error


def connect_error(status: Status) -> tuple[int, bytes]:
    """``(HTTP status, JSON body)`` of a Connect unary error."""
    return http_status(status[0]), json.dumps(error_object(status)).encode()


def end_stream(status: Status | None) -> bytes:
    """The JSON of a Connect end-of-stream message: ``{}`` when the stream succeeded."""
    if status is None:
        return b"{}"
    return json.dumps({"error": error_object(status)}).encode()


def grpc_web_trailers(status: Status | None) -> bytes:
    """The header lines of a gRPC-Web trailers frame (``grpc-status: 0`` on success)."""
    if status is None:
        return b"grpc-status: 0\r\ngrpc-message: \r\n"
    code, message, data = status
    quoted = urllib.parse.quote(message, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~")
    lines = f"grpc-status: {code.value[0]}\r\ngrpc-message: {quoted}\r\n"
    if data:
        lines += f"grpc-status-details-bin: {_unpadded(data)}\r\n"
    return lines.encode()


def malformed_json(full_name: str, reason: str, *, domain: str) -> Status:
    """The status of a JSON body that does not fit the method's input type."""
    info = error_details_pb2.ErrorInfo(reason="MALFORMED_REQUEST", domain=domain)
    message = clip(f"request JSON does not parse as {full_name}: {reason}", 512)
    status = status_pb2.Status(
        code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=message, details=[_pack(info)]
    )
    return grpc.StatusCode.INVALID_ARGUMENT, message, status.SerializeToString()


def _pack(message: Any) -> Any:
    from google.protobuf import any_pb2

    packed = any_pb2.Any()
    packed.Pack(message)
    return packed
