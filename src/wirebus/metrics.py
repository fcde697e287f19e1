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
  found its database unreachable and held its offsets until it answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

__all__ = ["Metrics"]

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
        self._server: Any = None

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
