"""One log line per gateway call, and a JSON formatter for every wirebus log line.

The gateway writes one INFO record per call to the ``wirebus.access``
logger when it ends: the method, the status code, the duration in
milliseconds, the peer and the caller's ``x-correlation-id`` metadata (``-``
when there is none). Request and response payloads are never logged. The
line costs one ``isEnabledFor`` check when the logger is disabled (turn it
off with ``logging.getLogger("wirebus.access").setLevel(logging.WARNING)``
in the application, or ``--log-level warning``).

The fields are also attributes of the record (``grpc_method``,
``grpc_code``, ``duration_ms``, ``peer``, ``correlation_id``), so
:class:`JsonFormatter` (``--log-format json``) writes them as JSON keys::

    {"time": "2025-01-01T12:00:00.123+00:00", "level": "INFO",
     "logger": "wirebus.access", "message": "/shop.orders.v1.OrderService/GetOrder OK 1.2ms ...",
     "grpc_method": "/shop.orders.v1.OrderService/GetOrder", "grpc_code": "OK",
     "duration_ms": 1.2, "peer": "ipv4:127.0.0.1:53412", "correlation_id": "demo-0001"}

Example::

    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level="INFO", handlers=[handler])
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import TYPE_CHECKING, Any

from .correlation import current_correlation

if TYPE_CHECKING:
    import grpc
    import grpc.aio

__all__ = [
    "ACCESS_LOGGER",
    "CORRELATION_KEY",
    "JsonFormatter",
    "correlation_id",
    "header_correlation_id",
    "log_call",
]

ACCESS_LOGGER = "wirebus.access"
CORRELATION_KEY = "x-correlation-id"

access = logging.getLogger(ACCESS_LOGGER)

# Attributes every LogRecord has: anything else was passed in ``extra``.
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
)


def correlation_id(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """A gRPC call's correlation id: the one its events carry (``x-correlation-id`` metadata,
    or the id the pipeline made for it), else the metadata's, else ``-``.

    Example::

        log_call(path, code, seconds, context.peer(), correlation_id(context))
    """
    bound = current_correlation()
    if bound is not None:
        return bound.correlation_id
    for key, value in context.invocation_metadata() or ():
        if key == CORRELATION_KEY:
            return value if isinstance(value, str) else value.decode(errors="replace")
    return "-"


def header_correlation_id(header: bytes | None) -> str:
    """An HTTP call's correlation id: the bound one, else its header's, else ``-``.

    Example::

        correlation = header_correlation_id(headers.get(b"x-correlation-id"))
    """
    bound = current_correlation()
    if bound is not None:
        return bound.correlation_id
    return "-" if header is None else header.decode("latin-1")


def log_call(
    method: str, code: grpc.StatusCode, seconds: float, peer: str, correlation: str
) -> None:
    """Write the access line of one ended call (the caller checked ``isEnabledFor``).

    Any port calls it: ``peer`` as grpc writes it (``ipv4:127.0.0.1:53412``),
    ``correlation`` from :func:`correlation_id` or :func:`header_correlation_id`.

    Example::

        if access.isEnabledFor(logging.INFO):
            log_call(path, grpc.StatusCode.OK, 0.0012, context.peer(), correlation_id(context))
    """
    name = code.name
    ms = round(seconds * 1000, 3)
    extra = {
        "grpc_method": method,
        "grpc_code": name,
        "duration_ms": ms,
        "peer": peer,
        "correlation_id": correlation,
    }
    access.info(
        "%s %s %.1fms peer=%s correlation_id=%s", method, name, ms, peer, correlation, extra=extra
    )


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: time, level, logger, message and ``extra`` fields.

    An exception's traceback goes in ``exc_info`` (one string), so each
    record stays one line.

    Example::

        handler.setFormatter(JsonFormatter())
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)
