"""``Retry``: how often, and how patiently, a consumer retries a failing handler.

Attempts back off exponentially with full jitter, capped at ``max_delay``.
An error whose class says ``retriable = False`` (every ``DomainError`` except
ResourceExhausted, Aborted and Unavailable) is not retried: trying the same
event again cannot change the outcome. Any other exception is retried.

Example::

    @router.handler(retry=Retry(attempts=5, initial_delay=0.5))
    async def capture_payment(event: OrderPlaced) -> PaymentCaptured: ...
"""

from __future__ import annotations

import dataclasses
import random

from .errors import ConfigurationError, DomainError

__all__ = ["Retry"]


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

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.max_delay, self.initial_delay * self.multiplier ** (attempt - 1))
        return random.uniform(0, ceiling) if self.jitter else ceiling

    @staticmethod
    def worth_retrying(exc: BaseException) -> bool:
        """False for errors that say trying again cannot help."""
        if isinstance(exc, DomainError):
            return exc.retriable
        return True
