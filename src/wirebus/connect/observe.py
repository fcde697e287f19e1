"""The Connect port's calls in the gateway's metrics and access log.

Each call of an app method is counted in the same ``grpc_server_*`` series
as the gRPC port's calls of that method (when the server has
:class:`~wirebus.metrics.RpcMetrics`; children made at start-up, the hot
path calls ``inc``/``observe``) and writes the same ``wirebus.access`` line
(``access_log.py``; one ``isEnabledFor`` check when it is disabled), its
peer and ``x-correlation-id`` read from the HTTP request. A
client-streaming call counts each message it reads
(``grpc_server_msg_received_total``), as the gRPC port does, through the
``received`` callback the call is given; any other call counts its one
request when it begins.

Example::

    observer = Observer(routes, rpc=None)
    began, metrics = observer.begin("/shop.orders.v1.OrderService/GetOrder")
    ...
    observer.end(path, metrics, grpc.StatusCode.OK, began, scope, headers)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

import grpc

from .. import access_log
from .call import peer_of

if TYPE_CHECKING:
    from ..gateway.binding import MethodRoute
    from ..metrics import MethodMetrics, RpcMetrics

__all__ = ["Observer"]

_CORRELATION_HEADER = access_log.CORRELATION_KEY.encode()


class Observer:
    """Counts and logs the calls of ``routes`` (``rpc=None``: logs only)."""

    __slots__ = ("_clock", "_metrics", "_paths", "_per_message")

    def __init__(self, routes: Iterable[MethodRoute], rpc: RpcMetrics | None) -> None:
        self._clock = time.perf_counter
        self._metrics: dict[str, MethodMetrics] = {}
        routes = list(routes)
        self._paths = frozenset(r.path for r in routes)  # health and unknown paths: not logged
        self._per_message = frozenset(r.path for r in routes if r.arity == "stream_unary")
        if rpc is not None:
            for r in routes:
                self._metrics[r.path] = rpc.method(r.grpc_type, r.service, r.method)

    def begin(self, path: str) -> tuple[float, MethodMetrics | None]:
        """The call's start, and its method's metrics (counted as started and received).

        A client-streaming call is counted as received per message instead
        (:meth:`received`).
        """
        metrics = self._metrics.get(path)
        if metrics is not None:
            metrics.started.inc()
            if path not in self._per_message:
                metrics.received.inc()
        return self._clock(), metrics

    @staticmethod
    def received(metrics: MethodMetrics | None) -> Callable[[], None] | None:
        """What counts one message read by a client-streaming call (``None``: nothing)."""
        return metrics.received.inc if metrics is not None else None

    def end(
        self,
        path: str,
        metrics: MethodMetrics | None,
        code: grpc.StatusCode,
        began: float,
        scope: MutableMapping[str, Any],
        headers: Mapping[bytes, bytes],
    ) -> None:
        """Count the ended call and write its access line (if the logger is enabled)."""
        seconds = self._clock() - began
        if metrics is not None:
            metrics.finished(code, seconds)
        if path in self._paths and access_log.access.isEnabledFor(logging.INFO):
            correlation = access_log.header_correlation_id(headers.get(_CORRELATION_HEADER))
            access_log.log_call(path, code, seconds, peer_of(scope.get("client")), correlation)
