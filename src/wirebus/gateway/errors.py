"""Exceptions -> gRPC status with ``google.rpc.Status`` details. The one place.

- :class:`~wirebus.DomainError` keeps its code and message and carries
  ``google.rpc.ErrorInfo`` (reason, domain = the app's name, metadata);
  :class:`~wirebus.InvalidArgument` adds ``google.rpc.BadRequest`` with one
  field violation per offending field.
- :class:`~wirebus.ConversionError` (a request that parses but cannot become
  the handler's message, such as a malformed UUID) is INVALID_ARGUMENT.
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
gRPC client library's status helpers find them.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from ..errors import ConversionError, DomainError, HandlerNotFound, InvalidArgument, WirebusError

__all__ = [
    "DETAILS_KEY",
    "INTERNAL_MESSAGE",
    "UNAVAILABLE_MESSAGE",
    "malformed_request",
    "status_for",
]

log = logging.getLogger(__name__)

DETAILS_KEY = "grpc-status-details-bin"
INTERNAL_MESSAGE = "internal error"
UNAVAILABLE_MESSAGE = "a service this method needs is unavailable; try again"


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def _status(
    code: grpc.StatusCode, message: str, *details: object
) -> tuple[grpc.StatusCode, str, bytes]:
    status = status_pb2.Status(
        code=code.value[0], message=message, details=[_pack(d) for d in details]
    )
    return code, message, status.SerializeToString()


def status_for(
    exc: BaseException, *, domain: str, method: str
) -> tuple[grpc.StatusCode, str, bytes]:
    """Map ``exc`` to ``(code, message, serialized google.rpc.Status)``."""
    if isinstance(exc, DomainError):
        info = error_details_pb2.ErrorInfo(reason=exc.reason, domain=domain, metadata=exc.metadata)
        if isinstance(exc, InvalidArgument):
            bad = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in exc.violations
                ]
            )
            return _status(exc.code, exc.message, bad, info)
        return _status(exc.code, exc.message, info)
    if isinstance(exc, ConversionError):
        info = error_details_pb2.ErrorInfo(reason="MALFORMED_REQUEST", domain=domain)
        return _status(grpc.StatusCode.INVALID_ARGUMENT, str(exc), info)
    if isinstance(exc, HandlerNotFound):
        return _status(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented")
    if isinstance(exc, WirebusError) and exc.code is not grpc.StatusCode.INTERNAL:
        return _status(exc.code, str(exc))
    if _connection_lost(exc):
        log.warning("%s: connection lost: %s: %s", method, type(exc).__name__, exc)
        info = error_details_pb2.ErrorInfo(reason="CONNECTION_LOST", domain=domain)
        return _status(grpc.StatusCode.UNAVAILABLE, UNAVAILABLE_MESSAGE, info)
    log.error("unhandled error in %s", method, exc_info=exc)
    return _status(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)


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
    return _status(
        grpc.StatusCode.INVALID_ARGUMENT, f"request bytes do not parse as {full_name}", info
    )
