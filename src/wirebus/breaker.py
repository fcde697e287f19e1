"""Circuit breakers: stop calling what keeps failing, and try it again later.

:class:`CircuitBreaker` is the configuration (frozen, shareable);
:class:`Circuits` keeps the state of named circuits for one owner -- each
mediator has its own (``mediator.circuits``), so two apps never share a
circuit. The state machine is `purgatory <https://github.com/mardiros/purgatory>`_'s
(the ``breaker`` extra); wirebus adds a single half-open probe, the error
and the metrics.

- **closed**: calls go through; ``failure_threshold`` consecutive failures open it;
- **open**: calls fail fast with :class:`~wirebus.errors.CircuitOpen`
  (UNAVAILABLE, retriable, ``retry_after`` = seconds until half-open) and
  never reach the guarded code;
- **half-open** (once ``recovery_timeout`` has passed): one call goes through
  as a probe while the others still fail fast; its success closes the
  circuit, its failure opens it again.

What counts as a failure is ``CircuitBreaker.counts`` (default
:func:`counts_as_failure`): any exception but the caller's own fault (a
:class:`~wirebus.DomainError` that is not retriable, such as ``NotFound`` or
``InvalidArgument``) and but cancellation. An excluded error counts as an
answer: the guarded service did respond. A cancelled call gives no verdict
(a cancelled probe leaves the circuit half-open for the next call).

Example (a handler's breaker is given at registration; a saga step or any
other code guards a call itself)::

    @router.handler(breaker=CircuitBreaker(failure_threshold=5, recovery_timeout=30))
    async def get_quote(query: GetQuote, rates: RatesClient) -> Quote: ...

    payments = mediator.circuits.circuit("payments", CircuitBreaker(failure_threshold=3))
    async with payments.guard():               # raises CircuitOpen while open
        await gateway.capture(order_id)
    await payments.call(gateway.capture, order_id)   # the same, for one call
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import CircuitOpen, ConfigurationError, DomainError

if TYPE_CHECKING:
    from purgatory import AsyncCircuitBreakerFactory
    from purgatory.service._async.circuitbreaker import AsyncCircuitBreaker

__all__ = ["Circuit", "CircuitBreaker", "CircuitState", "Circuits", "counts_as_failure"]

log = logging.getLogger(__name__)

R = TypeVar("R")

MISSING_EXTRA = "circuit breakers need purgatory: pip install 'wirebus[breaker]'"


def counts_as_failure(exc: BaseException) -> bool:
    """The default of ``CircuitBreaker.counts``: True unless the caller is at fault.

    Example::

        counts_as_failure(ConnectionError())          # True
        counts_as_failure(NotFound("no order 42"))    # False: the service answered
    """
    if not isinstance(exc, Exception):  # cancellation, KeyboardInterrupt: no verdict
        return False
    return not (isinstance(exc, DomainError) and not exc.retriable)


class CircuitState(enum.IntEnum):
    """A circuit's state; the value is that of the ``wirebus_circuit_breaker_state`` gauge."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2

    @property
    def label(self) -> str:
        """``closed``, ``half_open`` or ``open`` (the transitions metric's ``state`` label)."""
        return self.name.lower()


_FROM_PURGATORY = {
    "closed": CircuitState.CLOSED,
    "half-opened": CircuitState.HALF_OPEN,
    "opened": CircuitState.OPEN,
}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CircuitBreaker:
    """How a circuit opens and recovers; validated when made.

    ``name`` names the circuit (and the metrics' ``breaker`` label); by
    default a handler's breaker is named after the handler. Handlers whose
    breakers share a name share one circuit (one dependency, one verdict).

    Example::

        CircuitBreaker(failure_threshold=5, recovery_timeout=30.0, name="rates-api")
    """

    failure_threshold: int = 5
    """Consecutive failures that open the circuit."""
    recovery_timeout: float = 30.0
    """Seconds an open circuit waits before it lets one probe through."""
    counts: Callable[[BaseException], bool] = counts_as_failure
    """Whether an exception counts as a failure of the guarded service."""
    name: str | None = None

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ConfigurationError(
                f"failure_threshold must be at least 1, not {self.failure_threshold}"
            )
        if not self.recovery_timeout > 0:
            raise ConfigurationError(
                f"recovery_timeout must be more than 0 seconds, not {self.recovery_timeout}"
            )
        if sys.modules.get("purgatory") is None:
            try:
                import purgatory  # noqa: F401
            except ImportError:
                raise ConfigurationError(MISSING_EXTRA) from None


Listener = Callable[[str, CircuitState], None]
"""``listener(circuit_name, new_state)``, called on every transition."""


class Circuit:
    """One named circuit: guards calls with its :class:`CircuitBreaker`.

    Made by :meth:`Circuits.circuit`; look it up once and keep it.
    """

    def __init__(self, name: str, config: CircuitBreaker, owner: Circuits) -> None:
        self.name = name
        self.config = config
        self._owner = owner
        self._breaker: AsyncCircuitBreaker | None = None
        self._probing = False

    @property
    def state(self) -> CircuitState:
        """The state now (an open circuit past its timeout is still OPEN until called)."""
        if self._breaker is None:
            return CircuitState.CLOSED
        return _FROM_PURGATORY[self._breaker.context.state]

    def retry_after(self) -> float:
        """Seconds until an open circuit lets a probe through (0 when it would now)."""
        breaker = self._breaker
        if breaker is None or breaker.context.opened_at is None:
            return 0.0
        if breaker.context.state != "opened":
            return 0.0
        return max(0.0, breaker.context.opened_at + self.config.recovery_timeout - time.time())

    async def call(self, fn: Callable[..., Awaitable[R]], *args: Any) -> R:
        """``await fn(*args)`` through the circuit; raises ``CircuitOpen`` when it is open."""
        breaker = self._breaker or await self._setup()
        probe = breaker.context.state != "closed" and self._admit()
        try:
            return await self._through(breaker, fn, args)
        finally:
            if probe:
                self._probing = False

    @contextlib.asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """``async with circuit.guard(): ...`` -- the block's outcome is the call's."""
        breaker = self._breaker or await self._setup()
        probe = breaker.context.state != "closed" and self._admit()
        try:
            await self._enter(breaker)
            try:
                yield
            except Exception as exc:  # cancellation gives no verdict: not reported
                await breaker.__aexit__(type(exc), exc, exc.__traceback__)
                raise
            await breaker.__aexit__(None, None, None)
        finally:
            if probe:
                self._probing = False

    def _admit(self) -> bool:
        """A call to a circuit that is not closed: the probe (True), or refused."""
        wait = self.retry_after()
        if wait > 0:
            raise self._rejected(wait)
        if self._probing:  # one probe at a time; the others fail fast meanwhile
            raise self._rejected(min(1.0, self.config.recovery_timeout))
        self._probing = True
        return True

    async def _through(
        self, breaker: AsyncCircuitBreaker, fn: Callable[..., Awaitable[R]], args: tuple[Any, ...]
    ) -> R:
        await self._enter(breaker)
        try:
            result = await fn(*args)
        except Exception as exc:  # cancellation gives no verdict: not reported
            await breaker.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        await breaker.__aexit__(None, None, None)
        return result

    async def _enter(self, breaker: AsyncCircuitBreaker) -> None:
        from purgatory.domain.model import OpenedState

        try:
            await breaker.__aenter__()
        except OpenedState:  # the clock moved back between our check and purgatory's
            raise self._rejected(max(self.retry_after(), 0.001)) from None

    def _rejected(self, wait: float) -> CircuitOpen:
        return CircuitOpen(self.name, retry_after=wait)

    async def _setup(self) -> AsyncCircuitBreaker:
        counts = self.config.counts
        factory = self._owner._factory()
        self._breaker = await factory.get_breaker(
            self.name,
            threshold=self.config.failure_threshold,
            ttl=self.config.recovery_timeout,
            exclude=[(BaseException, lambda exc: not counts(exc))],
        )
        return self._breaker


class Circuits:
    """The circuits of one owner (a mediator, a saga runner), by name.

    Example::

        circuits = Circuits()
        payments = circuits.circuit("payments", CircuitBreaker(failure_threshold=3))
        circuits.subscribe(lambda name, state: print(name, state.label))
        await payments.call(capture, order_id)
    """

    def __init__(self) -> None:
        self._circuits: dict[str, Circuit] = {}
        self._listeners: list[Listener] = []
        self._purgatory: AsyncCircuitBreakerFactory | None = None

    def circuit(self, name: str, config: CircuitBreaker) -> Circuit:
        """The circuit ``name``, made on first use; a second config for a name is refused."""
        found = self._circuits.get(name)
        if found is None:
            found = self._circuits[name] = Circuit(name, config, self)
            for listener in tuple(self._listeners):
                listener(name, CircuitState.CLOSED)
        elif found.config != config:
            raise ConfigurationError(
                f"circuit {name!r} is configured twice, differently: {found.config} and {config}"
            )
        return found

    def __iter__(self) -> Iterator[Circuit]:
        return iter(tuple(self._circuits.values()))

    def __len__(self) -> int:
        return len(self._circuits)

    def get(self, name: str) -> Circuit | None:
        """The circuit ``name`` if one was made."""
        return self._circuits.get(name)

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(name, state)`` on every transition, and now for each circuit."""
        self._listeners.append(listener)
        for circuit in tuple(self._circuits.values()):
            listener(circuit.name, circuit.state)

    def _factory(self) -> AsyncCircuitBreakerFactory:
        if self._purgatory is None:
            try:
                from purgatory import AsyncCircuitBreakerFactory
            except ImportError:  # pragma: no cover - CircuitBreaker() checked it already
                raise ConfigurationError(MISSING_EXTRA) from None
            self._purgatory = AsyncCircuitBreakerFactory()
            self._purgatory.add_listener(self._on_event)
        return self._purgatory

    def _on_event(self, name: str, kind: str, event: Any) -> None:
        if kind != "state_changed":
            return
        state = _FROM_PURGATORY[event.state]
        if state is CircuitState.OPEN:
            log.warning("circuit %s opened", name)
        else:
            log.info("circuit %s is %s", name, state.label)
        for listener in tuple(self._listeners):
            listener(name, state)
