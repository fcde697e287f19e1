"""``AsyncLifecycle``: ``async with`` for everything that has ``start`` and ``stop``.

``async with x`` starts ``x``; if the start fails part-way, ``x.stop()`` runs
before the error propagates, so whatever the start already opened
(connections, servers, tasks) is released. A subclass's ``stop`` must
therefore be safe after a failed or partial start, as well as idempotent.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Self

__all__ = ["AsyncLifecycle"]

log = logging.getLogger(__name__)


class AsyncLifecycle:
    """``async with x`` means ``await x.start()`` ... ``await x.stop()``.

    A failed start is stopped too (then its error is raised): ``stop`` must
    release what the start left behind and must not fail on what it never
    opened. An error of that ``stop`` is logged and the start's is raised.

    Example::

        class Pump(AsyncLifecycle):
            async def start(self) -> None:
                self.task = asyncio.create_task(self.pump())

            async def stop(self) -> None:
                if getattr(self, "task", None) is not None:
                    self.task.cancel()

        async with Pump() as pump:
            ...
    """

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            try:
                await self.stop()
            except Exception:  # the start's error is the one to see
                log.exception("stopping %s after its failed start failed", type(self).__name__)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
