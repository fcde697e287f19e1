"""``SagaPoller``: recovers interrupted sagas at start-up, then fires due timeouts.

The runtime starts one with its consumers and relay. It first resumes every
unfinished saga that is not waiting on a live wait (a crash interrupted it:
its current in-process step or compensation runs again, from the last
commit), then claims due timeouts one batch at a time
(:meth:`~wirebus.saga.engine.SagaEngine.fire_due`: each in its own
transaction, so one failing saga never blocks the others). Several
processes may poll at once: claims are disjoint on PostgreSQL (``FOR UPDATE
SKIP LOCKED``), serialized on SQLite, and every transition checks the
saga's version.

Example::

    async with SagaPoller(app.saga_engine(mediator), interval=0.5):
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .._lifecycle import AsyncLifecycle
from ..errors import ConfigurationError, LifecycleError
from .engine import SagaEngine

__all__ = ["SagaPoller"]

log = logging.getLogger(__name__)


class SagaPoller(AsyncLifecycle):
    """Recovery once, then a poll for due timeouts every ``interval`` seconds (when idle).

    A full batch is followed by the next one at once; ``recover=False``
    skips the start-up recovery (``wirebus saga recover`` runs it by hand).
    """

    def __init__(
        self, engine: SagaEngine, *, interval: float = 1.0, batch: int = 100, recover: bool = True
    ) -> None:
        if interval <= 0:
            raise ConfigurationError(f"the saga poll interval must be positive, not {interval}")
        if batch < 1:
            raise ConfigurationError(f"the saga poll batch must be at least 1, not {batch}")
        self.engine = engine
        self.interval = interval
        self.batch = batch
        self.recover = recover
        self.recovered = asyncio.Event()
        """Set once the start-up recovery has run (or was skipped)."""
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    async def start(self) -> None:
        """Start polling in a task of its own (recovery first)."""
        if self._stopped or self._task is not None:
            raise LifecycleError("a saga poller runs once: build a new one")
        self._task = asyncio.create_task(self._run(), name="wirebus saga poller")

    async def stop(self) -> None:
        """Stop polling (idempotent); a transition in progress is cancelled and rolls back."""
        self._stopped = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        if self.recover:
            try:
                await self.engine.recover()
            except Exception:  # the database may be away: the poll goes on, recover by hand
                log.exception("recovering unfinished sagas failed")
        self.recovered.set()
        while True:
            try:
                claimed = await self.engine.fire_due(self.batch)
            except Exception:  # logged; the next poll tries again
                log.exception("claiming due saga timeouts failed")
                claimed = 0
            if claimed < self.batch:
                await asyncio.sleep(self.interval)
