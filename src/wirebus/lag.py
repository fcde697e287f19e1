"""``sample_lag``: the consumer group's lag per partition, into ``wirebus_consumer_lag``.

A consumer port that can say its lag (``KafkaConsumer.lag()``: end offset
minus the group's committed offset, per assigned partition) is asked every
``interval`` seconds by a task the runtime starts when it serves metrics, so
consuming a record costs nothing more. A partition this member no longer
owns drops out of the gauge (its new owner reports it). The in-memory
broker's consumer has no ``lag``: nothing is sampled.

Example::

    task = asyncio.create_task(sample_lag(port, metrics.consumer_lag, group="shop"))
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .broker import TopicPartition

__all__ = ["sample_lag"]

log = logging.getLogger(__name__)

LagSource = Callable[[], Awaitable[Mapping[TopicPartition, int]]]


async def sample_lag(source: LagSource, gauge: Any, *, group: str, interval: float = 5.0) -> None:
    """Set ``gauge{topic,partition,group}`` from ``source()`` every ``interval`` seconds."""
    shown: set[TopicPartition] = set()
    while True:
        try:
            lags = await source()
        except Exception as exc:  # the broker may be away: try again later
            log.debug("lag sample failed: %s: %s", type(exc).__name__, exc)
        else:
            for (topic, partition), lag in lags.items():
                gauge.labels(topic, str(partition), group).set(lag)
            for topic, partition in shown - lags.keys():
                gauge.remove(topic, str(partition), group)
            shown = set(lags)
        await asyncio.sleep(interval)
