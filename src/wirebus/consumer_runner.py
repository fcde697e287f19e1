"""``ConsumerRunner``: drives an :class:`~wirebus.consumer.EventProcessor` over a consumer port.

Records of one partition are processed in order, partitions concurrently;
offsets are committed only after their records reached an outcome (and the
handlers' work committed); a processing interruption keeps the offset,
seeks back and retries after a pause (a :class:`~wirebus.retry.Backoff`,
growing while the interruptions last, each wait at most ``failure_pause``);
a stop finishes the batch in hand, commits and returns, and ends such a
wait at once. An unreachable database
(:class:`~wirebus.consumer.DatabaseUnavailable`) is logged once when the
outage starts and once when it ends, not per record or per attempt.
Rebalances wait for the batch in hand (the port holds the runner's lock
while giving up partitions).

Example::

    runner = ConsumerRunner(port, processor, on_outcome=lambda record, outcome: ...)
    async with runner:
        await runner.run()          # until runner.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import anyio

from .broker import ConsumerPort, Record, TopicPartition
from .consumer import DatabaseUnavailable, EventProcessor, Outcome, ProcessingInterrupted
from .errors import ConfigurationError, LifecycleError
from .retry import Backoff

__all__ = ["ConsumerRunner"]

log = logging.getLogger(__name__)


class ConsumerRunner:
    """Runs an :class:`EventProcessor` over a :class:`ConsumerPort` until stopped.

    ``on_outcome(record, outcome)``, if given, is called for every record as
    it reaches its outcome (after its handlers' work committed, before its
    offset is): it must be quick and must not raise. :meth:`stop` wakes a
    port that has a ``wake()`` (the in-memory consumer), so the loop leaves
    at once instead of at the end of its ``poll_timeout``. ``metrics`` are
    also the processor's, unless it was given its own.

    After an interruption the runner waits ``backoff.delay(n)`` (n
    interruptions in a row) before it tries again; the default backoff
    starts at a tenth of ``failure_pause`` and grows to ``failure_pause``.

    Example::

        runner = ConsumerRunner(port, processor, on_outcome=lambda r, o: seen.append(o))
    """

    def __init__(
        self,
        port: ConsumerPort,
        processor: EventProcessor,
        *,
        poll_timeout: float = 0.5,
        failure_pause: float = 1.0,
        backoff: Backoff | None = None,
        metrics: Any = None,
        on_outcome: Callable[[Record, Outcome], None] | None = None,
    ) -> None:
        if failure_pause < 0:
            raise ConfigurationError(f"failure_pause must not be negative, not {failure_pause}")
        self.port = port
        self.processor = processor
        self.poll_timeout = poll_timeout
        self.failure_pause = failure_pause
        self.backoff = backoff or Backoff(
            initial_delay=failure_pause / 10, max_delay=failure_pause, jitter="equal"
        )
        """The waits after interruptions in a row (reset by a batch that goes through)."""
        self.database_outages = 0
        """How many times the database was found unreachable (one per outage)."""
        self.outcomes: dict[str, int] = {}
        self.metrics = metrics
        if metrics is not None and processor.metrics is None:
            processor.metrics = metrics  # its dead-letter counters go with the runner's
        self.on_outcome = on_outcome
        """Called with each record and the outcome it reached (read once per batch)."""
        self._counters: dict[str, Any] = {}
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._state = "new"
        self._failures = 0  # interruptions in a row
        self._outage_since: float | None = None  # monotonic start of a database outage

    async def start(self) -> None:
        """Join the group; call :meth:`run` next (or use ``async with``)."""
        if self._state != "new":
            raise LifecycleError(f"a {self._state} consumer cannot be started again")
        self._state = "started"
        self.port.guard_rebalance(self._lock)
        await self.port.start()

    async def run(self) -> None:
        """Consume until :meth:`stop` is called; returns after the final commit."""
        if self._state != "started":
            raise LifecycleError("start the consumer before running it")
        try:
            while not self._stopping.is_set():
                batch = await self.port.fetch(self.poll_timeout)
                if not batch:
                    continue
                if await self._process_batch(batch):
                    self._went_through()
                else:
                    self._failures += 1
                    await _wait(self._stopping, self.backoff.delay(self._failures))
        finally:
            await self.port.stop()
            self._state = "stopped"

    async def _process_batch(self, batch: Mapping[TopicPartition, Sequence[Record]]) -> bool:
        """Process one fetched batch; commit what reached an outcome. False on failure."""
        done: dict[TopicPartition, int] = {}
        failed: dict[TopicPartition, int] = {}
        async with self._lock:
            if len(batch) == 1:  # one partition: no task group needed
                for tp, records in batch.items():
                    await self._partition(tp, records, done, failed)
            else:
                async with anyio.create_task_group() as tg:
                    for tp, records in batch.items():
                        tg.start_soon(self._partition, tp, records, done, failed)
            if done:
                await self.port.commit(done)
            for tp, offset in failed.items():
                await self.port.seek(tp, offset)
        return not failed

    async def _partition(
        self,
        tp: TopicPartition,
        records: Sequence[Record],
        done: dict[TopicPartition, int],
        failed: dict[TopicPartition, int],
    ) -> None:
        """Process one partition's records in order; note the offset reached (or to retry)."""
        counts = self.outcomes
        count = self._count_metric if self.metrics is not None else None
        observer = self.on_outcome
        last = -1

        def reached(record: Record, outcome: Outcome) -> None:
            nonlocal last
            counts[outcome] = counts.get(outcome, 0) + 1
            if count is not None:
                count(outcome)
            last = record.offset
            if observer is not None:
                observer(record, outcome)

        try:
            await self.processor.process_batch(records, reached)
        except DatabaseUnavailable as exc:
            failed[tp] = last + 1 if last >= 0 else records[0].offset
            self._database_unavailable(tp, failed[tp], exc)
        except ProcessingInterrupted as exc:
            offset = last + 1 if last >= 0 else records[0].offset
            log.error("%s[%d]@%d interrupted: %s", tp[0], tp[1], offset, exc)
            failed[tp] = offset
        finally:
            if last >= 0:
                done[tp] = last + 1

    def _database_unavailable(self, tp: TopicPartition, offset: int, exc: Exception) -> None:
        """Note an unreachable database: one warning (and one count) per outage."""
        if self._outage_since is not None:
            log.debug("%s[%d]@%d waits for the database: %s", tp[0], tp[1], offset, exc)
            return
        self._outage_since = time.monotonic()
        self.database_outages += 1
        if self.metrics is not None:
            self.metrics.database_outages.inc()
        log.warning(
            "the database is unreachable (%s): %s[%d] holds at offset %d and retries"
            " until it answers (no record is dead-lettered for this)",
            exc, tp[0], tp[1], offset,
        )  # fmt: skip

    def _went_through(self) -> None:
        """A batch reached its outcomes: the interruptions (and an outage) are over."""
        self._failures = 0
        if self._outage_since is not None:
            log.warning(
                "the database answers again: consuming after %.1f s",
                time.monotonic() - self._outage_since,
            )
            self._outage_since = None

    def _count_metric(self, outcome: Outcome) -> None:
        counter = self._counters.get(outcome)
        if counter is None:  # one labelled child per outcome, looked up once
            counter = self._counters[outcome] = self.metrics.records.labels(outcome)
        counter.inc()

    async def stop(self) -> None:
        """Ask the loop to finish the batch in hand, commit and leave (idempotent)."""
        self._stopping.set()
        wake = getattr(self.port, "wake", None)  # optional: a fetch waiting now returns at once
        if wake is not None:
            wake()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
        if self._state == "started":
            await self.port.stop()
            self._state = "stopped"


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
