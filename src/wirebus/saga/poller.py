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
    Every ``recover_every`` seconds (``None``: never) sagas left unchanged
    that long are resumed too: those of a process that crashed and did not
    come back.
    """

    def __init__(
        self,
        engine: SagaEngine,
        *,
        interval: float = 1.0,
        batch: int = 100,
        recover: bool = True,
        recover_every: float | None = 60.0,
        stop_timeout: float = 10.0,
    ) -> None:
        if interval <= 0:
            raise ConfigurationError(f"the saga poll interval must be positive, not {interval}")
        if recover_every is not None and recover_every <= 0:
            raise ConfigurationError(f"recover_every must be positive seconds, not {recover_every}")
        if stop_timeout <= 0:
            raise ConfigurationError(f"stop_timeout must be positive seconds, not {stop_timeout}")
        if batch < 1:
            raise ConfigurationError(f"the saga poll batch must be at least 1, not {batch}")
        self.engine = engine
        self.interval = interval
        self.batch = batch
        self.recover = recover
        self.recover_every = recover_every
        self.stop_timeout = stop_timeout
        """How long :meth:`stop` waits for the transition in progress before it cancels it."""
        self.recovered = asyncio.Event()
        """Set once the start-up recovery has run (or was skipped)."""
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        """Start polling in a task of its own (recovery first)."""
        if self._stopped or self._task is not None:
            raise LifecycleError("a saga poller runs once: build a new one")
        self._task = asyncio.create_task(self._run(), name="wirebus saga poller")

    async def stop(self) -> None:
        """Stop polling (idempotent) once the transition in progress committed.

        The poller is not cancelled in the middle of a transaction: on SQLite
        a cancelled statement makes SQLAlchemy terminate its aiosqlite
        connection, and that close can wait forever for the connection's
        thread, which left ``wirebus serve`` hanging after a SIGTERM. Only
        after ``stop_timeout`` seconds is it cancelled (and rolls back).
        """
        self._stopped = True
        self._stopping.set()
        task, self._task = self._task, None
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=self.stop_timeout)
        if not done:
            log.warning("the saga poller did not stop within %.1fs: cancelled", self.stop_timeout)
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        stopping = self._stopping
        if self.recover:
            await self._recover(0.0)
        self.recovered.set()
        loop = asyncio.get_running_loop()
        every = self.recover_every
        next_recovery = loop.time() + every if every is not None else None
        while not stopping.is_set():
            try:
                claimed = await self.engine.fire_due(self.batch, stop=stopping)
            except Exception:  # logged; the next poll tries again
                log.exception("claiming due saga timeouts failed")
                claimed = 0
            if every is not None and next_recovery is not None and loop.time() >= next_recovery:
                await self._recover(every)
                next_recovery = loop.time() + every
            if claimed < self.batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), self.interval)

    async def _recover(self, older_than: float) -> None:
        try:
            await self.engine.recover(older_than=older_than, stop=self._stopping)
        except Exception:  # the database may be away: the poll goes on, recover by hand
            log.exception("recovering unfinished sagas failed")
