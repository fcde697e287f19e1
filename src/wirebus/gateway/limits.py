"""``CallLimiter``: the app's calls in flight, bounded, and refused on shutdown.

The binding asks :meth:`CallLimiter.admit` before it decodes a request and
calls :meth:`CallLimiter.release` when the call ends, for unary and
server-streaming methods alike (a stream holds its slot until its last
message). Past ``limit`` calls, or once :meth:`CallLimiter.drain` was
called, ``admit`` says no and :meth:`CallLimiter.refusal` is the status to
answer at once:

- at capacity: RESOURCE_EXHAUSTED, "server at capacity: N calls in flight
  (max_concurrent_calls=N); retry later";
- draining (the gateway stops): UNAVAILABLE, "server is shutting down; retry".

Both are codes that gRPC client retry policies and load balancers treat as
"try again, maybe elsewhere". Refusing in the binding keeps grpc core's own
queue short, so no call waits there for a slot that never comes and is then
CANCELLED when the server stops. Health and reflection are not counted: a
probe still answers while every slot is taken.

grpc.aio's ``maximum_concurrent_rpcs`` does the first half in grpc core, but
with a fixed message ("Concurrent RPC limit exceeded!"), counting health
``Watch`` and reflection streams, and it cannot refuse with UNAVAILABLE on
shutdown; hence this object. Example::

    limiter = CallLimiter(limit=64)
    if limiter.admit():
        try:
            ...  # serve the call
        finally:
            limiter.release()
"""

from __future__ import annotations

import asyncio
import sys
import time

import grpc

from ..errors import ConfigurationError, ResourceExhausted, Unavailable
from .errors import status_for

__all__ = ["CallLimiter"]

_Status = tuple[grpc.StatusCode, str, bytes]
_MAX_QUIET_WAIT = 1.0  # seconds of refusing queued calls once none runs


class CallLimiter:
    """Counts calls in flight; refuses past ``limit`` (``None``: no bound) or when draining."""

    __slots__ = (
        "_active",
        "_capacity",
        "_draining",
        "_idle",
        "_refusals",
        "_refused",
        "limit",
    )

    def __init__(self, *, limit: int | None = None, domain: str = "wirebus") -> None:
        if limit is not None and limit < 1:
            raise ConfigurationError(f"max_concurrent_calls must be >= 1 or None, not {limit}")
        self.limit = limit
        self._capacity = sys.maxsize if limit is None else limit
        self._active = 0
        self._draining = False
        self._refused = 0
        self._idle = asyncio.Event()
        self._idle.set()
        full = ResourceExhausted(
            f"server at capacity: {limit} calls in flight (max_concurrent_calls={limit});"
            " retry later",
            reason="SERVER_AT_CAPACITY",
        )
        closing = Unavailable("server is shutting down; retry", reason="SERVER_SHUTTING_DOWN")
        self._refusals = (
            status_for(full, domain=domain, method=""),
            status_for(closing, domain=domain, method=""),
        )

    @property
    def active(self) -> int:
        """Calls admitted and not yet released."""
        return self._active

    @property
    def draining(self) -> bool:
        """Whether :meth:`drain` was called: every new call is refused."""
        return self._draining

    def admit(self) -> bool:
        """Take a slot for one call; ``False`` (take none) at capacity or draining."""
        if self._active >= self._capacity:
            self._refused += 1
            return False
        self._active += 1
        self._idle.clear()
        return True

    def release(self) -> None:
        """Give back the slot of a call that ended (however it ended)."""
        self._active -= 1
        if not self._active:
            self._idle.set()

    def refusal(self) -> _Status:
        """``(code, message, google.rpc.Status bytes)`` for a call :meth:`admit` refused."""
        return self._refusals[self._draining]

    def drain(self) -> None:
        """Refuse every call from now on (UNAVAILABLE); running ones keep their slots."""
        self._draining = True
        self._capacity = 0

    async def wait_drained(self, within: float, *, quiet: float = 0.1) -> bool:
        """After :meth:`drain`: wait until no call runs and none was refused for ``quiet`` s.

        The quiet period lets calls already queued in grpc core reach the
        binding and be refused with UNAVAILABLE before the server shuts
        down (grpc core would CANCEL them): it ends after a whole ``quiet``
        sleep (the event loop ran, so the server took what core held) saw
        no refusal, or one second after no call runs, so steady traffic does
        not hold the stop for the whole ``within``. ``False`` when
        ``within`` seconds passed first.
        """
        deadline = time.monotonic() + within
        try:
            await asyncio.wait_for(self._idle.wait(), within)
        except TimeoutError:
            return False
        deadline = min(deadline, time.monotonic() + _MAX_QUIET_WAIT)
        while (left := deadline - time.monotonic()) > 0:
            seen = self._refused
            await asyncio.sleep(min(quiet, left))
            if self._refused == seen:
                return True
        return False
