"""Exceptions -> gRPC status with ``google.rpc.Status`` details. The one place.

- :class:`~wirebus.DomainError` keeps its code and message and carries
  ``google.rpc.ErrorInfo`` (reason, domain = the app's name, metadata);
  :class:`~wirebus.InvalidArgument` adds ``google.rpc.BadRequest`` with one
  field violation per offending field.
- :class:`~wirebus.ConversionError` (a request that parses but cannot become
  the handler's message, such as a malformed UUID) is INVALID_ARGUMENT;
  :class:`~wirebus.errors.RequestLimitExceeded` (more repeated elements than
  the gateway's ``RequestLimits``) adds a ``BadRequest`` naming the field,
  and ErrorInfo ``REQUEST_LIMIT_EXCEEDED`` with the field and the limit.
- :class:`~wirebus.errors.CircuitOpen` (an open circuit breaker failed the
  call fast) is UNAVAILABLE with ErrorInfo ``CIRCUIT_OPEN`` (metadata
  ``circuit``) and ``google.rpc.RetryInfo`` whose ``retry_delay`` is the
  time until the circuit lets a probe through.
- :class:`~wirebus.HandlerNotFound` is UNIMPLEMENTED.
- A lost connection to a service the handler needs (the database closed or
  refused it: a ``ConnectionError``, asyncpg's or SQLAlchemy's error for
  an invalidated connection, anywhere in the exception's causes) is
  UNAVAILABLE, which gRPC clients treat as worth retrying. The request's
  transaction did not commit -- unless the connection was lost during the
  commit itself, whose outcome no client of any database can know.
- Anything else is INTERNAL with a generic message; the traceback is logged
  here, on the server only, and nothing of it reaches the client.

The details travel in the ``grpc-status-details-bin`` trailer, where every
gRPC client library's status helpers find them. Trailers are bounded (grpc
core refuses metadata over 8 KB soft / 16 KB hard, and the binary trailer is
sent base64, 4/3 of its size), so the details are too: at most
``MAX_VIOLATIONS`` field violations (ErrorInfo metadata ``violations`` and
``violations_shown`` give the count), every string clipped -- the message to
``MAX_MESSAGE_BYTES``, each field, description and metadata value to
``MAX_TEXT_BYTES``, a clipped one ending ``…(N bytes)`` -- and the whole
serialized status to ``MAX_DETAILS_BYTES``. Input a caller sent (an id of a
megabyte) is never echoed back whole.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from ..errors import (
    CircuitOpen,
    ConversionError,
    DomainError,
    FieldViolation,
    HandlerNotFound,
    InvalidArgument,
    RequestLimitExceeded,
    WirebusError,
)

__all__ = [
    "DETAILS_KEY",
    "INTERNAL_MESSAGE",
    "MAX_DETAILS_BYTES",
    "MAX_MESSAGE_BYTES",
    "MAX_TEXT_BYTES",
    "MAX_VIOLATIONS",
    "UNAVAILABLE_MESSAGE",
    "malformed_request",
    "status_for",
    "status_of",
]

log = logging.getLogger(__name__)

DETAILS_KEY = "grpc-status-details-bin"
INTERNAL_MESSAGE = "internal error"
UNAVAILABLE_MESSAGE = "a service this method needs is unavailable; try again"

MAX_VIOLATIONS = 50
"""Field violations sent at most; ErrorInfo metadata says how many there were."""
MAX_MESSAGE_BYTES = 512
"""The status message, clipped (UTF-8 bytes; it travels twice: grpc-message and details)."""
MAX_TEXT_BYTES = 128
"""Each field path, description, reason and metadata value, clipped (UTF-8 bytes)."""
MAX_KEY_BYTES = 64
"""Each ErrorInfo metadata key, clipped (UTF-8 bytes)."""
MAX_METADATA = 8
"""ErrorInfo metadata entries sent at most."""
_VIOLATIONS_BUDGET = 1536  # serialized BadRequest bytes at most
MAX_DETAILS_BYTES = 4096
"""The serialized ``google.rpc.Status`` at most (base64: ~5.5 KB of the 8 KB soft limit)."""


def clip(text: str, limit: int = MAX_TEXT_BYTES) -> str:
    """``text`` if it is at most ``limit`` UTF-8 bytes, else its start and ``…(N bytes)``.

    Example::

        clip("x" * 1_000_000)   # 'xxx…xxx…(1000000 bytes)', 128 bytes or fewer
    """
    if len(text) <= limit // 4:  # fast path: no encoding needed
        return text
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    marker = f"…({len(data)} bytes)"
    keep = max(0, limit - len(marker.encode()))
    return data[:keep].decode("utf-8", "ignore") + marker


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def status_of(
    code: grpc.StatusCode, message: str, *details: object
) -> tuple[grpc.StatusCode, str, bytes]:
    """``(code, message, serialized google.rpc.Status)``: the triple every port answers with.

    ``message`` is clipped to ``MAX_MESSAGE_BYTES``; ``details`` (protobuf
    messages such as ``ErrorInfo``) are packed as ``Any``, and dropped if the
    whole would pass ``MAX_DETAILS_BYTES``. Used by :func:`status_for` and by
    the Connect port for the statuses it makes itself.

    Example::

        code, message, details = status_of(grpc.StatusCode.NOT_FOUND, "no such order")
    """
    message = clip(message, MAX_MESSAGE_BYTES)
    status = status_pb2.Status(
        code=code.value[0], message=message, details=[_pack(d) for d in details]
    )
    data = status.SerializeToString()
    if len(data) > MAX_DETAILS_BYTES:  # cannot happen with the caps above; a last guard
        del status.details[:]
        data = status.SerializeToString()
    return code, message, data


def status_for(
    exc: BaseException, *, domain: str, method: str
) -> tuple[grpc.StatusCode, str, bytes]:
    """Map ``exc`` to ``(code, message, serialized google.rpc.Status)``, bounded in size."""
    if isinstance(exc, DomainError):
        if isinstance(exc, InvalidArgument):
            bad, counts = _bad_request(exc.violations)
            info = _info(exc.reason, domain, {**counts, **exc.metadata})
            return status_of(exc.code, exc.message, bad, info)
        info = _info(exc.reason, domain, exc.metadata)
        if isinstance(exc, CircuitOpen):
            return status_of(exc.code, exc.message, info, _retry_info(exc.retry_after))
        return status_of(exc.code, exc.message, info)
    if isinstance(exc, RequestLimitExceeded):
        bad, _ = _bad_request(exc.violations)
        metadata = {"field": exc.field, "limit": str(exc.limit)}
        info = _info("REQUEST_LIMIT_EXCEEDED", domain, metadata)
        return status_of(grpc.StatusCode.INVALID_ARGUMENT, str(exc), bad, info)
    if isinstance(exc, ConversionError):
        info = error_details_pb2.ErrorInfo(reason="MALFORMED_REQUEST", domain=domain)
        return status_of(grpc.StatusCode.INVALID_ARGUMENT, str(exc), info)
    if isinstance(exc, HandlerNotFound):
        return status_of(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented")
    if isinstance(exc, WirebusError) and exc.code is not grpc.StatusCode.INTERNAL:
        return status_of(exc.code, str(exc))
    if _connection_lost(exc):
        log.warning("%s: connection lost: %s: %s", method, type(exc).__name__, exc)
        info = error_details_pb2.ErrorInfo(reason="CONNECTION_LOST", domain=domain)
        return status_of(grpc.StatusCode.UNAVAILABLE, UNAVAILABLE_MESSAGE, info)
    log.error("unhandled error in %s", method, exc_info=exc)
    return status_of(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)


def _info(reason: str, domain: str, metadata: Mapping[str, str]) -> error_details_pb2.ErrorInfo:
    """ErrorInfo with every string clipped and at most ``MAX_METADATA`` entries."""
    entries = {
        clip(k, MAX_KEY_BYTES): clip(v) for k, v in itertools.islice(metadata.items(), MAX_METADATA)
    }
    return error_details_pb2.ErrorInfo(reason=clip(reason), domain=domain, metadata=entries)


def _retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    """``google.rpc.RetryInfo``: wait ``seconds`` (never negative) before retrying."""
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(max(0, round(seconds * 1e9)))
    return error_details_pb2.RetryInfo(retry_delay=delay)


def _bad_request(
    violations: Sequence[FieldViolation],
) -> tuple[error_details_pb2.BadRequest, dict[str, str]]:
    """The first violations that fit, and (when some are left out) the counts for ErrorInfo."""
    shown = []
    budget = _VIOLATIONS_BUDGET
    for v in violations[:MAX_VIOLATIONS]:
        item = error_details_pb2.BadRequest.FieldViolation(
            field=clip(v.field), description=clip(v.description)
        )
        budget -= item.ByteSize() + 3
        if budget < 0:
            break
        shown.append(item)
    counts: dict[str, str] = {}
    if len(shown) < len(violations):
        counts = {"violations": str(len(violations)), "violations_shown": str(len(shown))}
    return error_details_pb2.BadRequest(field_violations=shown), counts


def _connection_lost(exc: BaseException) -> bool:
    """A connection failed or was closed under the handler (the exception or a cause)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionError) or getattr(
            current, "connection_invalidated", False
        ):
            return True
        if type(current).__name__ in _DRIVER_CONNECTION_ERRORS:
            return True
        current = current.__cause__ or current.__context__
    return False


# asyncpg's errors for a connection that is gone (not OSError subclasses);
# matched by name so that the gateway does not import database drivers.
_DRIVER_CONNECTION_ERRORS = frozenset(
    {"ConnectionDoesNotExistError", "ConnectionFailureError", "CannotConnectNowError"}
)


def malformed_request(full_name: str, *, domain: str) -> tuple[grpc.StatusCode, str, bytes]:
    """The status for request bytes that do not parse as the method's input type."""
    info = error_details_pb2.ErrorInfo(reason="MALFORMED_REQUEST", domain=domain)
    return status_of(
        grpc.StatusCode.INVALID_ARGUMENT, f"request bytes do not parse as {full_name}", info
    )
