"""``OwnBatches``: the one place wirebus touches aiokafka's private record-batch API.

The publisher builds its own per-partition batches when a call carries many
records for one partition: sent complete, without lingering and without a
future per record. That needs ``aiokafka.record.default_records`` (private:
the size estimate) and the shape of the batches ``create_batch()`` returns.
Both are checked, at import (:func:`own_batches`) and when a producer starts
(:meth:`OwnBatches.fits`); if anything is missing the publisher falls back to
the public ``AIOKafkaProducer.send()`` for every record. Tested with the
aiokafka versions pinned in ``pyproject.toml`` (the ``kafka`` extra).

Example::

    batches = own_batches()           # None: the private API is not what we use
    if batches is not None and batches.fits(producer):
        batch, append = batches.new(producer)
        if append(timestamp=None, key=key, value=value, headers=headers) is None:
            ...  # full: send it, start another
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from types import ModuleType
from typing import Any

__all__ = ["Append", "OwnBatches", "missing_private_api", "own_batches"]

log = logging.getLogger(__name__)

_MODULE = "aiokafka.record.default_records"
_BUILDER = "DefaultRecordBatchBuilder"
_ESTIMATE = "estimate_size_in_bytes"
_PRODUCER_METHODS = ("create_batch", "send_batch")
_BATCH_METHODS = ("append", "close")

Estimate = Callable[[bytes | None, bytes, list[tuple[str, bytes]]], int]
Append = Callable[..., object]
"""A batch's own ``append(timestamp=, key=, value=, headers=)``: ``None`` once it is full."""


class OwnBatches:
    """aiokafka's record batches, behind the few calls the publisher makes.

    Example::

        batches = OwnBatches(estimate)
        size = batches.estimate(b"key", b"value", [("ce_id", b"...")])
    """

    __slots__ = ("estimate",)

    def __init__(self, estimate: Estimate) -> None:
        self.estimate = estimate
        """The encoded size of one record, as the broker will count it."""

    @staticmethod
    def fits(producer: Any) -> bool:
        """Whether ``producer`` makes batches this class can fill (checked once per producer)."""
        if not all(callable(getattr(producer, name, None)) for name in _PRODUCER_METHODS):
            log.warning("aiokafka's producer has no create_batch/send_batch: sending one by one")
            return False
        batch = producer.create_batch()
        if not all(callable(getattr(batch, name, None)) for name in _BATCH_METHODS):
            log.warning("aiokafka's batches have no append/close: sending records one by one")
            return False
        return True

    @staticmethod
    def new(producer: Any) -> tuple[Any, Append]:
        """An empty batch of ``producer`` and its ``append``, bound once per batch.

        The publisher calls ``append`` per record (keyword arguments
        ``timestamp``, ``key``, ``value``, ``headers``); it returns ``None``
        when the batch is full. Handing out the bound method keeps a wrapper
        call off the per-record path.
        """
        batch = producer.create_batch()
        return batch, batch.append

    @staticmethod
    async def send(producer: Any, batch: Any, topic: str, partition: int) -> Any:
        """Close ``batch`` (complete: no need to linger) and hand it over; its future."""
        batch.close()
        return await producer.send_batch(batch, topic, partition=partition)


def missing_private_api(module: ModuleType | Any) -> list[str]:
    """What the publisher needs from ``aiokafka.record.default_records`` that ``module`` lacks.

    Example::

        assert missing_private_api(importlib.import_module(_MODULE)) == []
    """
    builder = getattr(module, _BUILDER, None)
    if builder is None:
        return [_BUILDER]
    if not callable(getattr(builder, _ESTIMATE, None)):
        return [f"{_BUILDER}.{_ESTIMATE}"]
    return []


def own_batches(module: ModuleType | Any | None = None) -> OwnBatches | None:
    """The contained batching when aiokafka's private API has what it needs, else ``None``.

    ``module`` stands in for ``aiokafka.record.default_records`` (tests).

    Example::

        batches = own_batches()   # an OwnBatches with the installed aiokafka
    """
    if module is None:
        try:
            module = importlib.import_module(_MODULE)
        except ImportError:
            log.warning("%s is gone: the publisher sends records one by one", _MODULE)
            return None
    missing = missing_private_api(module)
    if missing:
        log.warning("aiokafka lacks %s: the publisher sends records one by one", ", ".join(missing))
        return None
    estimate: Estimate = getattr(getattr(module, _BUILDER), _ESTIMATE)
    return OwnBatches(estimate)
