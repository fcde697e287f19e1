"""Prometheus metrics of one process: outbox lag, relay and consumer outcomes.

Needs the ``metrics`` extra (prometheus-client). Each :class:`Metrics` has its
own registry (no global state); ``wirebus serve|run|relay|consume
--metrics-port N`` serves it on ``http://127.0.0.1:N/metrics``:

- ``wirebus_outbox_pending`` / ``wirebus_outbox_failed`` (gauges): rows waiting / parked;
- ``wirebus_outbox_oldest_pending_seconds`` (gauge): the outbox lag;
- ``wirebus_outbox_published_total`` / ``wirebus_outbox_failed_total`` (counters, this relay);
- ``wirebus_consumer_records_total{outcome}`` (counter): handled, duplicate,
  ignored, skipped, dead_lettered;
- ``wirebus_consumer_dead_letters_truncated_total{topic}`` (counter): dead
  letters cut to fit the DLQ producer's ``max_request_size``;
- ``wirebus_consumer_database_outages_total`` (counter): times a consumer
  found its database unreachable and held its offsets until it answered;
- ``wirebus_dlq_records_total{topic}`` (counter): records sent to the
  dead-letter topic ``topic`` (``<original>.dlq``);
- ``wirebus_consumer_lag{topic,partition,group}`` (gauge): end offset minus
  the group's committed offset, sampled every few seconds (``lag.py``);
- the gateway's RPC metrics, named as the gRPC Prometheus middleware
  (go-grpc-prometheus) names them, so its dashboards and alerts work
  unchanged (:class:`RpcMetrics`): ``grpc_server_started_total``,
  ``grpc_server_handled_total{grpc_code}``, ``grpc_server_handling_seconds``
  (histogram, the middleware's default buckets),
  ``grpc_server_msg_received_total``, ``grpc_server_msg_sent_total``, all
  labelled ``grpc_type,grpc_service,grpc_method``; and
  ``wirebus_gateway_calls_in_flight`` (gauge, what ``max_concurrent_calls``
  bounds). ``grpc_code`` is the Go name of the status code (``OK``,
  ``InvalidArgument``, ``DeadlineExceeded``...), as the middleware writes it.

Without ``--metrics-port`` no :class:`Metrics` exists and nothing is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["Metrics", "MethodMetrics", "RpcMetrics"]

log = logging.getLogger(__name__)


class Metrics:
    """The metrics of one runtime, refreshed from the outbox every ``interval`` seconds."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.pending = Gauge(
            "wirebus_outbox_pending", "Outbox rows waiting to be published", registry=self.registry
        )
        self.parked = Gauge(
            "wirebus_outbox_failed", "Outbox rows marked failed", registry=self.registry
        )
        self.lag = Gauge(
            "wirebus_outbox_oldest_pending_seconds",
            "Age of the oldest pending outbox row",
            registry=self.registry,
        )
        self.published = Counter(
            "wirebus_outbox_published", "Rows this relay published", registry=self.registry
        )
        self.failed = Counter(
            "wirebus_outbox_failed_rows", "Rows this relay marked failed", registry=self.registry
        )
        self.records = Counter(
            "wirebus_consumer_records",
            "Consumed records by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.dead_letters_truncated = Counter(
            "wirebus_consumer_dead_letters_truncated",
            "Dead letters cut to fit the DLQ producer's max_request_size, by original topic",
            ["topic"],
            registry=self.registry,
        )
        self.database_outages = Counter(
            "wirebus_consumer_database_outages",
            "Times a consumer found its database unreachable and held its offsets",
            registry=self.registry,
        )
        self.dlq_records = Counter(
            "wirebus_dlq_records",
            "Records sent to a dead-letter topic, by dead-letter topic",
            ["topic"],
            registry=self.registry,
        )
        self.consumer_lag = Gauge(
            "wirebus_consumer_lag",
            "End offset minus the group's committed offset, per partition",
            ["topic", "partition", "group"],
            registry=self.registry,
        )
        self.sagas_finished = Counter(
            "wirebus_sagas_finished",
            "Sagas that reached a final status, by saga and status"
            " (completed, compensated, failed)",
            ["saga", "status"],
            registry=self.registry,
        )
        self.sagas_failed = Counter(
            "wirebus_sagas_failed",
            "Sagas failed (a compensation kept failing): wirebus saga list --failed",
            ["saga"],
            registry=self.registry,
        )
        self.rpc = RpcMetrics(self.registry)
        self._server: Any = None
        self._dlq_children: dict[str, Any] = {}

    def count_outcome(self, record: Any, outcome: str) -> None:
        """An ``on_outcome`` hook: count a dead-lettered record in ``wirebus_dlq_records_total``.

        The dead letter goes to ``<record.topic>.dlq``; one labelled child
        per topic, looked up once.
        """
        if outcome != "dead_lettered":
            return
        child = self._dlq_children.get(record.topic)
        if child is None:
            child = self._dlq_children[record.topic] = self.dlq_records.labels(
                record.topic + ".dlq"
            )
        child.inc()

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Serve ``/metrics`` on ``host:port`` (a background thread)."""
        self._server, _thread = start_http_server(port, addr=host, registry=self.registry)

    def close(self) -> None:
        """Stop serving (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()  # release the listening socket too
            self._server = None

    async def refresh_forever(
        self, stats: Callable[[], Awaitable[Any]], interval: float = 5.0
    ) -> None:
        """Update the outbox gauges from ``stats()`` until cancelled."""
        while True:
            with contextlib.suppress(Exception):  # the database may be away: try again later
                current = await stats()
                self.pending.set(current.pending)
                self.parked.set(current.failed)
                self.lag.set(current.oldest_pending_seconds or 0.0)
            await asyncio.sleep(interval)


# go-grpc-prometheus's default buckets (prometheus.DefBuckets), in seconds.
HANDLING_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_GO_NAMES = {
    grpc.StatusCode.OK: "OK",
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}


class MethodMetrics:
    """One method's labelled children, made at start-up: the hot path only calls ``inc``."""

    __slots__ = ("handled", "received", "seconds", "sent", "started")

    def __init__(self, rpc: RpcMetrics, grpc_type: str, service: str, method: str) -> None:
        labels = (grpc_type, service, method)
        self.started = rpc.started.labels(*labels)
        self.received = rpc.received.labels(*labels)
        self.sent = rpc.sent.labels(*labels)
        self.seconds = rpc.seconds.labels(*labels)
        self.handled = {code: rpc.handled.labels(*labels, name) for code, name in _GO_NAMES.items()}
        """``grpc.StatusCode`` -> the ``grpc_server_handled_total`` child of that code."""

    def finished(self, code: grpc.StatusCode, seconds: float) -> None:
        """Count one call that ended with ``code`` after ``seconds``."""
        self.handled[code].inc()
        self.seconds.observe(seconds)


class RpcMetrics:
    """The gateway's RPC metrics, with go-grpc-prometheus's names and labels.

    Example::

        rpc = Metrics().rpc
        place = rpc.method("unary", "shop.orders.v1.OrderService", "PlaceOrder")
        place.started.inc()
        place.finished(grpc.StatusCode.OK, 0.004)
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["grpc_type", "grpc_service", "grpc_method"]
        self.started = Counter(
            "grpc_server_started",
            "Total number of RPCs started on the server.",
            labels,
            registry=registry,
        )
        self.handled = Counter(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            [*labels, "grpc_code"],
            registry=registry,
        )
        self.seconds = Histogram(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been"
            " application-level handled by the server.",
            labels,
            buckets=HANDLING_BUCKETS,
            registry=registry,
        )
        self.received = Counter(
            "grpc_server_msg_received",
            "Total number of RPC stream messages received on the server.",
            labels,
            registry=registry,
        )
        self.sent = Counter(
            "grpc_server_msg_sent",
            "Total number of gRPC stream messages sent by the server.",
            labels,
            registry=registry,
        )
        self.in_flight = Gauge(
            "wirebus_gateway_calls_in_flight",
            "The app's calls running now (what max_concurrent_calls bounds)",
            registry=registry,
        )

    def method(self, grpc_type: str, service: str, method: str) -> MethodMetrics:
        """The children of one method (call once per method, at start-up)."""
        return MethodMetrics(self, grpc_type, service, method)

    def track_in_flight(self, count: Callable[[], int]) -> None:
        """Report ``count()`` as the in-flight gauge, read at scrape time (no per-call cost)."""
        self.in_flight.set_function(count)
