"""A saga step guarded by a circuit breaker waits while its circuit is open, then runs.

The pay saga reserves stock (in-process, compensated by a release) and
charges a card through a payment provider that can be down. The charge step
has a breaker: its circuit is ``saga:pay.charge`` of the mediator. Sagas run
in one mediator with the in-memory saga store; the test fires due waits by
hand, as the runtime's poller does.
"""

from __future__ import annotations

import dataclasses

import pytest
from prometheus_client import CollectorRegistry

from wirebus import App, CircuitBreaker, Command, Event, Mediator, Router
from wirebus.breaker import Circuit, CircuitState
from wirebus.metrics import BreakerMetrics
from wirebus.retry import Backoff
from wirebus.saga import Saga, SagaEngine, SagaState, SagaStatus, Step
from wirebus.testing import wait_until

RECOVERY = 0.5  # seconds an open circuit waits before it lets a probe through
CIRCUIT = "saga:pay.charge"
NO_BACKOFF = Backoff(initial_delay=0.0, max_delay=0.0, jitter="none")


class Charge(Command[None]):
    order_id: str


class Release(Command[None]):
    order_id: str


class PayRequested(Event):
    order_id: str


class ChargeRequested(Event):
    order_id: str


class ChargeAnswered(Event):
    order_id: str


@dataclasses.dataclass
class Payment:
    order_id: str


@dataclasses.dataclass
class Provider:
    """The payment provider: fails every call while ``down``."""

    down: bool = True
    calls: list[str] = dataclasses.field(default_factory=list)
    released: list[str] = dataclasses.field(default_factory=list)
    release_down: bool = False


def pay_app(
    provider: Provider, *, threshold: int = 2, step_attempts: int = 5, messaging: bool = False
) -> App:
    router = Router("provider")

    @router.handler
    async def charge(cmd: Charge) -> None:
        provider.calls.append(cmd.order_id)
        if provider.down:
            raise ConnectionError("the payment provider does not answer")

    @router.handler
    async def release(cmd: Release) -> None:
        if provider.release_down:
            raise ConnectionError("the stock service does not answer")
        provider.released.append(cmd.order_id)

    async def reserve(data: Payment) -> None:
        return None

    async def undo_reserve(data: Payment, mediator: Mediator) -> None:
        await mediator.send(Release(order_id=data.order_id))

    async def pay(data: Payment, mediator: Mediator) -> None:
        await mediator.send(Charge(order_id=data.order_id))

    breaker = CircuitBreaker(failure_threshold=threshold, recovery_timeout=RECOVERY)
    second = (
        Step(
            "charge",
            send=lambda d: ChargeRequested(order_id=d.order_id),
            replies={ChargeAnswered: "fail"},
        )
        if messaging
        else Step("charge", action=pay)
    )
    saga = Saga(
        "pay",
        data=Payment,
        key="order_id",
        start_on=[PayRequested],
        backoff=NO_BACKOFF,
        step_attempts=step_attempts,
        breaker=breaker,  # every step's default: each step has a circuit of its own
        steps=[Step("reserve", action=reserve, compensate=undo_reserve), second],
    )
    return App(name="shop", routers=[router], sagas=[saga])


async def pay_for(mediator: Mediator, engine: SagaEngine, order_id: str) -> SagaState:
    await mediator.publish(PayRequested(order_id=order_id))
    state = await engine.find("pay", order_id)
    assert state is not None
    return state


def circuit_of(mediator: Mediator, name: str = CIRCUIT) -> Circuit:
    circuit = mediator.circuits.get(name)
    assert circuit is not None, f"no circuit {name}"
    return circuit


def outcomes(state: SagaState) -> list[tuple[str, str, str]]:
    return [(h.step, h.phase, h.outcome) for h in state.history]


async def settled(engine: SagaEngine, order_id: str) -> SagaState | None:
    """Fire the due waits (what the poller does); the saga once it is final."""
    await engine.fire_due()
    state = await engine.find("pay", order_id)
    return state if state is not None and state.status.final else None


async def test_an_open_step_circuit_makes_later_sagas_wait_without_calling_the_dependency() -> None:
    provider = Provider()
    app = pay_app(provider, threshold=2)
    mediator = app.mediator()
    engine = app.saga_engine(mediator)

    for order in ("o-1", "o-2"):  # the provider fails twice: the step's circuit opens
        failed = await pay_for(mediator, engine, order)
        assert failed.status is SagaStatus.COMPENSATED
    assert circuit_of(mediator).state is CircuitState.OPEN
    assert provider.released == ["o-1", "o-2"]

    waiting = await pay_for(mediator, engine, "o-3")
    assert provider.calls == ["o-1", "o-2"]  # failed fast: the provider was not called
    assert waiting.status is SagaStatus.RUNNING  # not compensated: it waits for the circuit
    assert outcomes(waiting)[-1] == ("charge", "action", "circuit open")
    assert CIRCUIT in waiting.history[-1].detail
    assert waiting.attempts == 1

    provider.down = False  # the provider recovers; the half-open probe is o-3's charge
    done = await wait_until(lambda: settled(engine, "o-3"), within=10)
    assert done.status is SagaStatus.COMPLETED
    assert provider.calls == ["o-1", "o-2", "o-3"]
    assert circuit_of(mediator).state is CircuitState.CLOSED
    assert outcomes(done)[-2:] == [
        ("charge", "action", "circuit open"),
        ("charge", "action", "succeeded"),
    ]
    assert provider.released == ["o-1", "o-2"]  # o-3 reserved once, never released


async def test_a_failing_probe_opens_the_circuit_again_and_the_waiting_saga_compensates() -> None:
    provider = Provider()
    app = pay_app(provider, threshold=1)
    mediator = app.mediator()
    engine = app.saga_engine(mediator)
    await pay_for(mediator, engine, "o-1")  # opens the circuit
    waiting = await pay_for(mediator, engine, "o-2")
    assert waiting.status is SagaStatus.RUNNING

    done = await wait_until(lambda: settled(engine, "o-2"), within=10)
    assert done.status is SagaStatus.COMPENSATED  # the probe ran and failed: a real failure
    assert provider.calls == ["o-1", "o-2"]
    assert "ConnectionError" in done.error
    assert circuit_of(mediator).state is CircuitState.OPEN


async def test_an_action_refused_step_attempts_times_fails_and_the_saga_compensates() -> None:
    provider = Provider()
    app = pay_app(provider, threshold=1, step_attempts=2)
    mediator = app.mediator()
    engine = app.saga_engine(mediator)
    await pay_for(mediator, engine, "o-1")  # opens the circuit
    circuit = circuit_of(mediator)
    waiting = await pay_for(mediator, engine, "o-2")  # refused once: waits until half-open
    assert waiting.attempts == 1

    await wait_until(lambda: circuit.retry_after() == 0, within=10)
    with pytest.raises(ConnectionError):  # another caller's probe fails: open for a while again
        await circuit.call(CallProvider(provider))
    assert circuit.state is CircuitState.OPEN

    done = await wait_until(lambda: settled(engine, "o-2"), within=10)
    assert done.status is SagaStatus.COMPENSATED
    assert outcomes(done)[-3:] == [
        ("charge", "action", "circuit open"),
        ("charge", "action", "failed"),
        ("reserve", "compensation", "succeeded"),
    ]
    assert "CircuitOpen" in done.error
    assert "(2 times)" in done.error
    assert provider.calls == ["o-1", "probe"]  # o-2 never reached the provider
    assert provider.released == ["o-1", "o-2"]


@dataclasses.dataclass
class CallProvider:
    """A direct call of the provider, as another client of the same circuit makes it."""

    provider: Provider

    async def __call__(self) -> None:
        self.provider.calls.append("probe")
        raise ConnectionError("the payment provider does not answer")


async def test_a_compensation_whose_circuit_is_open_waits_without_spending_its_attempts() -> None:
    provider = Provider(down=False, release_down=True)
    app = pay_app(provider, threshold=1, messaging=True)
    mediator = app.mediator()
    engine = app.saga_engine(mediator)
    await pay_for(mediator, engine, "o-1")  # reserved, charge sent: waits for the answer

    await mediator.publish(ChargeAnswered(order_id="o-1"))  # "fail": compensate the reserve
    state = await engine.find("pay", "o-1")
    assert state is not None
    assert state.status is SagaStatus.COMPENSATING
    assert (outcomes(state)[-1], state.attempts) == (("reserve", "compensation", "retrying"), 1)
    reserve = circuit_of(mediator, "saga:pay.reserve")
    assert reserve.state is CircuitState.OPEN  # the release failed once (threshold 1)

    async def refused() -> SagaState | None:
        await engine.fire_due()
        found = await engine.find("pay", "o-1")
        last = found.history[-1] if found is not None else None
        return found if last is not None and last.outcome == "circuit open" else None

    waiting = await wait_until(refused, within=10)  # the retry found the circuit open
    assert waiting.status is SagaStatus.COMPENSATING
    assert waiting.attempts == 1  # the failed release; the refusal spent nothing
    assert outcomes(waiting)[-1] == ("reserve", "compensation", "circuit open")

    provider.release_down = False
    done = await wait_until(lambda: settled(engine, "o-1"), within=10)
    assert done.status is SagaStatus.COMPENSATED
    assert provider.released == ["o-1"]
    assert reserve.state is CircuitState.CLOSED


async def test_a_step_circuit_is_reported_by_the_breaker_metrics_under_its_name() -> None:
    provider = Provider()
    app = pay_app(provider, threshold=1)
    mediator = app.mediator()
    engine = app.saga_engine(mediator)
    registry = CollectorRegistry()
    BreakerMetrics(registry).watch(mediator.circuits)

    def state() -> float | None:
        return registry.get_sample_value("wirebus_circuit_breaker_state", {"breaker": CIRCUIT})

    await pay_for(mediator, engine, "o-1")
    assert state() == CircuitState.OPEN.value
    labels = {"breaker": CIRCUIT, "state": "open"}
    assert registry.get_sample_value("wirebus_circuit_breaker_transitions_total", labels) == 1


def test_a_step_breaker_overrides_the_saga_default_and_a_named_breaker_is_shared() -> None:
    async def act(data: Payment) -> None:
        return None

    default = CircuitBreaker(failure_threshold=3)
    own = CircuitBreaker(failure_threshold=1)
    shared = CircuitBreaker(failure_threshold=2, name="stock-service")
    saga = Saga(
        "s",
        data=Payment,
        key="order_id",
        breaker=default,
        steps=[
            Step("a", action=act),
            Step("b", action=act, breaker=own),
            Step("c", action=act, breaker=shared),
        ],
    )
    assert saga.breakers == (("saga:s.a", default), ("saga:s.b", own), ("stock-service", shared))
    unguarded = Saga("t", data=Payment, key="order_id", steps=[Step("a", action=act)])
    assert unguarded.breakers == (None,)
