"""Retry and backoff: one policy for consumer retries, the relay and reconnects.

:class:`Backoff` says how long to wait after the n-th failure: exponential,
capped at ``max_delay``, with jitter (full, or "equal": between half the
ceiling and the ceiling, for loops that must not spin). :class:`Retry` is a
``Backoff`` plus a number of attempts, for event handlers in a consumer.

An error whose class says ``retriable = False`` (every ``WirebusError`` that
says trying again cannot help: most ``DomainError`` subclasses, conversion
and configuration errors) is not retried. Any other exception is retried.

Example::

    @router.handler(retry=Retry(attempts=5, initial_delay=0.5))
    async def capture_payment(event: OrderPlaced) -> PaymentCaptured: ...

    backoff = Backoff(initial_delay=0.5, max_delay=30.0, jitter="equal")
    await asyncio.sleep(backoff.delay(failures))
"""

from __future__ import annotations

import dataclasses
import random
from typing import Literal

from .errors import ConfigurationError, WirebusError

__all__ = ["Backoff", "Retry", "is_retriable"]

Jitter = Literal["full", "equal", "none"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Exponential backoff with jitter: ``delay(n)`` after the n-th failure (1-based)."""

    initial_delay: float = 0.2
    max_delay: float = 5.0
    multiplier: float = 2.0
    jitter: Jitter = "full"

    def __post_init__(self) -> None:
        if self.initial_delay < 0 or self.max_delay < 0:
            raise ConfigurationError("backoff delays must not be negative")
        if self.multiplier < 1:
            raise ConfigurationError(f"backoff multiplier must be >= 1, not {self.multiplier}")
        if self.jitter not in ("full", "equal", "none"):
            raise ConfigurationError(
                f"jitter must be 'full', 'equal' or 'none', not {self.jitter!r}"
            )

    def ceiling(self, attempt: int) -> float:
        """The longest wait after failure number ``attempt``."""
        exponent = min(max(attempt, 1) - 1, 64)  # no float overflow after many failures
        return min(self.max_delay, self.initial_delay * self.multiplier**exponent)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failure number ``attempt`` (1-based)."""
        ceiling = self.ceiling(attempt)
        if self.jitter == "full":
            return random.uniform(0, ceiling)
        if self.jitter == "equal":
            return random.uniform(ceiling / 2, ceiling)
        return ceiling


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Retry:
    """Retry policy of one event handler (the app's default when none is given)."""

    attempts: int = 3
    initial_delay: float = 0.2
    max_delay: float = 5.0
    multiplier: float = 2.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigurationError(f"Retry.attempts must be at least 1, not {self.attempts}")
        if self.initial_delay < 0 or self.max_delay < 0:
            raise ConfigurationError("Retry delays must not be negative")
        if self.multiplier < 1:
            raise ConfigurationError(f"Retry.multiplier must be >= 1, not {self.multiplier}")

    @property
    def backoff(self) -> Backoff:
        """The waits between attempts, as a :class:`Backoff`."""
        return Backoff(
            initial_delay=self.initial_delay,
            max_delay=self.max_delay,
            multiplier=self.multiplier,
            jitter="full" if self.jitter else "none",
        )

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return self.backoff.delay(attempt)

    @staticmethod
    def worth_retrying(exc: BaseException) -> bool:
        """False for errors that say trying again cannot help."""
        if isinstance(exc, WirebusError):
            return exc.retriable
        return True


def is_retriable(error: BaseException) -> bool:
    """Whether waiting and trying again may succeed (transport and broker faults).

    A ``WirebusError`` says so itself (``retriable``); timeouts and
    connection/OS errors are retriable; anything else is not.
    """
    if isinstance(error, WirebusError):
        return error.retriable
    return isinstance(error, (TimeoutError, ConnectionError, OSError)) or bool(
        getattr(error, "retriable", False)
    )
