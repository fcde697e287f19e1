"""Declaring a saga: its name, data, correlation key, what starts it and its ordered steps.

A saga is a plain object (no registry): give it to ``App(sagas=[...])``.
Each :class:`Step` has an action and optionally a compensation. An action is
either

- **in-process** (``action=``): an async function of the saga's data that
  calls handlers through the mediator; what those handlers write and emit
  commits in one transaction with the saga's new state, or
- **messaging** (``send=``): a function of the data returning the protobuf
  command(s)/event(s) to send to another service (through the outbox, in the
  transaction of the saga's state); the step then waits for one of its
  ``replies`` (correlated by the saga's key), at most ``timeout`` seconds.

An action's or compensation's parameters after the data are injected by
annotation: :class:`~wirebus.Mediator`, :class:`~wirebus.Context` (to
``emit``) and :class:`~wirebus.saga.state.SagaState` (read only).

A step may be guarded by a circuit breaker (``breaker=``, or ``Saga(breaker=)``
for every step): its action, or its send, and its compensation run through
the circuit ``saga:<saga>.<step>`` of the mediator (``mediator.circuits``).
While the circuit is open the step does not run: the saga waits (a due row
in the timeouts table, ``backoff`` and at least until the circuit half-opens)
and tries again; an action that found the circuit open ``step_attempts``
times fails, and the saga compensates. A compensation waits for its circuit
as long as it takes (only the calls that ran count towards
``compensation_attempts``).

Example::

    @dataclasses.dataclass
    class Checkout:
        order_id: str
        total_cents: int
        payment_id: str = ""

    async def reserve(data: Checkout, mediator: Mediator) -> None:
        await mediator.send(ReserveStock(order_id=data.order_id))

    def captured(data: Checkout, reply: PaymentCaptured) -> None:
        data.payment_id = reply.payment_id       # None: the reply means success

    checkout = Saga(
        "checkout",
        data=Checkout,
        key="order_id",
        start_on=[OrderPlaced],                 # data built from the event's fields
        steps=[
            Step("reserve stock", action=reserve, compensate=release),
            Step("capture payment", send=lambda d: CapturePayment(order_id=d.order_id),
                 replies={PaymentCaptured: captured, PaymentDeclined: "fail"}, timeout=30.0),
            Step("confirm order", action=confirm),
        ],
    )
"""

from __future__ import annotations

import dataclasses
import inspect
import operator
import typing
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, Literal, TypeVar

from ..breaker import CircuitBreaker
from ..context import Context
from ..errors import ConfigurationError
from ..mediator import Mediator
from ..retry import Backoff
from .state import SagaState

__all__ = ["Reply", "Saga", "Step", "StepCall"]

D = TypeVar("D")
Outcome = Literal["ok", "fail"]
Reply = Outcome | Callable[[Any, Any], "Outcome | None"]
"""What a reply means: ``"ok"``, ``"fail"``, or ``fn(data, reply)`` (may update data; None = ok)."""

StepCall = Callable[..., Awaitable[Any]]
"""``await call(data, mediator, ctx, state)``: an action or compensation, bound at declaration."""

_DEFAULT_BACKOFF = Backoff(initial_delay=0.5, max_delay=30.0, jitter="equal")


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    """One step of a saga: an action (in-process or messaging) and its optional compensation.

    ``replies`` maps each reply type of a messaging step to what it means;
    ``timeout`` (seconds) bounds the wait for one (``None``: wait forever).
    ``breaker`` guards the step's action (or send) and compensation with the
    circuit ``saga:<saga>.<step>`` (or the breaker's ``name``, shared).

    Example::

        Step("reserve stock", action=reserve, compensate=release)
        Step("capture payment", send=capture, replies={PaymentCaptured: "ok"}, timeout=30)
        Step("charge", action=charge, breaker=CircuitBreaker(failure_threshold=5))
    """

    name: str
    action: Callable[..., Awaitable[Any]] | None = None
    compensate: Callable[..., Awaitable[Any]] | None = None
    send: Callable[[Any], Any] | None = None
    replies: Mapping[type, Reply] = dataclasses.field(default_factory=dict)
    timeout: float | None = None
    breaker: CircuitBreaker | None = None

    def __post_init__(self) -> None:
        if (self.action is None) == (self.send is None):
            raise ConfigurationError(f"step {self.name!r}: give exactly one of action= or send=")
        if self.send is not None and not self.replies:
            raise ConfigurationError(f"step {self.name!r}: a send= step needs replies=")
        if self.action is not None and (self.replies or self.timeout is not None):
            raise ConfigurationError(
                f"step {self.name!r}: replies= and timeout= are for send= steps"
            )
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigurationError(f"step {self.name!r}: timeout must be positive seconds")
        for tp, meaning in self.replies.items():
            if not (meaning in ("ok", "fail") or callable(meaning)):
                raise ConfigurationError(
                    f"step {self.name!r}: the reply {tp.__qualname__} must map to 'ok', 'fail'"
                    f" or a function of (data, reply), not {meaning!r}"
                )

    @property
    def messaging(self) -> bool:
        """Whether this step sends and waits for a reply."""
        return self.send is not None


class Saga(Generic[D]):
    """A saga type: ``name``, its ``data`` dataclass, its correlation ``key`` and ``steps``.

    ``key`` is the name of a field every message of the saga carries (and the
    data has), or a function of a message returning the key. ``start_on``
    event types start it (an event handler is generated; the data is built
    by ``start(event)``, by default from the event's fields of the same
    names); a handler starts it explicitly with the injectable
    :class:`~wirebus.saga.engine.Sagas`. A failing compensation is tried
    ``compensation_attempts`` times, waiting ``backoff`` between tries, then
    the saga is failed. ``breaker`` guards every step without a breaker of
    its own; an action whose circuit is open waits (``backoff``, at least
    until the circuit half-opens) and is tried again, ``step_attempts``
    times in all before the saga compensates.

    Example::

        checkout = Saga("checkout", data=Checkout, key="order_id",
                        start_on=[OrderPlaced], steps=[...])
        app = App(..., sagas=[checkout])
    """

    def __init__(
        self,
        name: str,
        *,
        data: type[D],
        key: str | Callable[[Any], str],
        steps: Sequence[Step],
        start_on: Iterable[type] = (),
        start: Callable[[Any], D] | None = None,
        compensation_attempts: int = 5,
        backoff: Backoff = _DEFAULT_BACKOFF,
        breaker: CircuitBreaker | None = None,
        step_attempts: int = 5,
    ) -> None:
        if not name:
            raise ConfigurationError("a saga needs a name")
        if not dataclasses.is_dataclass(data):
            raise ConfigurationError(f"saga {name!r}: data= must be a dataclass")
        if not steps:
            raise ConfigurationError(f"saga {name!r}: it needs at least one step")
        names = [s.name for s in steps]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"saga {name!r}: step names must be unique")
        if compensation_attempts < 1:
            raise ConfigurationError(f"saga {name!r}: compensation_attempts must be at least 1")
        if step_attempts < 1:
            raise ConfigurationError(f"saga {name!r}: step_attempts must be at least 1")
        self.name = name
        self.data_type = data
        self.key_of: Callable[[Any], str] = (
            operator.attrgetter(key) if isinstance(key, str) else key
        )
        self.key_field = key if isinstance(key, str) else None
        self.steps: tuple[Step, ...] = tuple(steps)
        self.start_on: tuple[type, ...] = tuple(start_on)
        self.compensation_attempts = compensation_attempts
        self.step_attempts = step_attempts
        self.backoff = backoff
        self.breakers: tuple[tuple[str, CircuitBreaker] | None, ...] = tuple(
            _circuit_of(name, s.name, s.breaker or breaker) for s in self.steps
        )
        """Per step: the name and breaker of its circuit, or ``None`` (not guarded)."""
        self._start = start or _from_fields(data)
        self.actions: tuple[StepCall | None, ...] = tuple(
            _bound(s.action, name, s.name) for s in self.steps
        )
        self.compensations: tuple[StepCall | None, ...] = tuple(
            _bound(s.compensate, name, s.name) for s in self.steps
        )
        self.waiting_for: dict[type, list[int]] = {}
        """Reply type -> indexes of the steps that wait for it."""
        for index, step in enumerate(self.steps):
            for tp in step.replies:
                self.waiting_for.setdefault(tp, []).append(index)

    def __repr__(self) -> str:
        return f"Saga({self.name!r}, steps={[s.name for s in self.steps]})"

    # ------------------------------------------------------------ data

    def data_from(self, message: Any) -> D:
        """The data of a saga started by ``message``."""
        return self._start(message)

    def dump(self, data: Any) -> dict[str, Any]:
        """The data as stored (JSON-serializable)."""
        return dataclasses.asdict(data)

    def load(self, stored: Mapping[str, Any]) -> D:
        """The data dataclass from what was stored."""
        return self.data_type(**stored)

    def key_from(self, message: Any) -> str:
        """The correlation key a message carries."""
        return str(self.key_of(message))


def _circuit_of(
    saga: str, step: str, breaker: CircuitBreaker | None
) -> tuple[str, CircuitBreaker] | None:
    """A step's circuit: the breaker's own name (shared), else ``saga:<saga>.<step>``."""
    if breaker is None:
        return None
    return (breaker.name or f"saga:{saga}.{step}", breaker)


def _from_fields(data: type[Any]) -> Callable[[Any], Any]:
    """``start(message)`` building ``data`` from the message's attributes of the same names."""
    names = [f.name for f in dataclasses.fields(data) if f.init]
    required = {
        f.name
        for f in dataclasses.fields(data)
        if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }

    def start(message: Any) -> Any:
        values = {n: getattr(message, n) for n in names if hasattr(message, n)}
        missing = required - values.keys()
        if missing:
            raise ConfigurationError(
                f"{type(message).__qualname__} lacks {', '.join(sorted(missing))} for"
                f" {data.__qualname__}: give the saga a start= function"
            )
        return data(**values)

    return start


_INJECTABLE = {Mediator: "mediator", Context: "ctx", SagaState: "state"}


def _bound(fn: Callable[..., Awaitable[Any]] | None, saga: str, step: str) -> StepCall | None:
    """``call(data, mediator, ctx, state)`` passing ``fn`` the parameters it declares."""
    if fn is None:
        return None
    owner = f"saga {saga!r} step {step!r}"
    if not inspect.iscoroutinefunction(fn):
        raise ConfigurationError(f"{owner}: {fn.__qualname__} must be `async def`")
    try:
        hints = typing.get_type_hints(fn)
    except NameError as exc:
        raise ConfigurationError(f"{owner}: cannot resolve an annotation ({exc})") from None
    params = list(inspect.signature(fn).parameters.values())
    if not params:
        raise ConfigurationError(f"{owner}: {fn.__qualname__} must take the saga's data first")
    wanted: list[tuple[str, str]] = []
    for p in params[1:]:
        slot = _INJECTABLE.get(hints.get(p.name))  # type: ignore[arg-type]
        if slot is None:
            raise ConfigurationError(
                f"{owner}: {fn.__qualname__} parameter {p.name!r} must be annotated"
                " Mediator, Context or SagaState"
            )
        wanted.append((p.name, slot))

    async def call(data: Any, mediator: Mediator, ctx: Context, state: SagaState) -> Any:
        given = {"mediator": mediator, "ctx": ctx, "state": state}
        return await fn(data, **{name: given[slot] for name, slot in wanted})

    return call
