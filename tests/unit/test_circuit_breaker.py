"""Circuit breakers: open after failures, fail fast, probe once half-open, report their state."""

from __future__ import annotations

import asyncio
import sys

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from prometheus_client import CollectorRegistry

from tests.unit.test_event_processor import (
    Cancelled,
    FakeSleep,
    app_of,
    cancelled,
    processor_for,
    record_of,
)
from wirebus import (
    App,
    CircuitBreaker,
    CircuitOpen,
    ConfigurationError,
    InvalidArgument,
    Mediator,
    NotFound,
    Query,
    Router,
    Unavailable,
)
from wirebus.breaker import Circuit, Circuits, CircuitState
from wirebus.brokers.memory import InMemoryBroker
from wirebus.gateway.errors import status_for
from wirebus.metrics import BreakerMetrics
from wirebus.retry import Retry, is_retriable
from wirebus.testing import wait_until

FAST = 0.05  # seconds: recovery timeouts short enough to wait for with wait_until


class Dependency:
    """What a guarded call reaches: counts calls, fails while ``down``."""

    def __init__(self) -> None:
        self.calls = 0
        self.down = True

    async def __call__(self, value: str = "ok") -> str:
        self.calls += 1
        if self.down:
            raise ConnectionError("dependency is down")
        return value


def circuit_of(threshold: int = 3, timeout: float = 60.0) -> Circuit:
    breaker = CircuitBreaker(failure_threshold=threshold, recovery_timeout=timeout)
    return Circuits().circuit("dep", breaker)


async def fail(circuit: Circuit, dep: Dependency, times: int) -> None:
    for _ in range(times):
        with pytest.raises(ConnectionError):
            await circuit.call(dep)


async def half_open(circuit: Circuit) -> None:
    await wait_until(lambda: circuit.retry_after() == 0, within=5)


# ---------------------------------------------------------------- the state machine


async def test_the_circuit_opens_after_threshold_consecutive_failures() -> None:
    circuit, dep = circuit_of(threshold=3), Dependency()

    await fail(circuit, dep, 2)
    assert circuit.state is CircuitState.CLOSED
    await fail(circuit, dep, 1)

    assert circuit.state is CircuitState.OPEN


async def test_an_open_circuit_fails_fast_without_calling_the_guarded_code() -> None:
    circuit, dep = circuit_of(threshold=1, timeout=30), Dependency()
    await fail(circuit, dep, 1)

    with pytest.raises(CircuitOpen) as raised:
        await circuit.call(dep)

    assert dep.calls == 1
    assert raised.value.circuit == "dep"
    assert 29 < raised.value.retry_after <= 30
    assert raised.value.code is grpc.StatusCode.UNAVAILABLE
    assert raised.value.reason == "CIRCUIT_OPEN"


async def test_a_success_resets_the_count_of_consecutive_failures() -> None:
    circuit, dep = circuit_of(threshold=2), Dependency()

    await fail(circuit, dep, 1)
    dep.down = False
    assert await circuit.call(dep) == "ok"
    dep.down = True
    await fail(circuit, dep, 1)

    assert circuit.state is CircuitState.CLOSED


async def test_errors_that_are_the_callers_fault_do_not_count_as_failures() -> None:
    circuit = circuit_of(threshold=1)

    async def not_found() -> None:
        raise NotFound("no such order")

    async def invalid() -> None:
        raise InvalidArgument("bad id")

    for call in (not_found, invalid, not_found):
        with pytest.raises((NotFound, InvalidArgument)):
            await circuit.call(call)

    assert circuit.state is CircuitState.CLOSED


async def test_what_counts_as_a_failure_is_configurable() -> None:
    breaker = CircuitBreaker(failure_threshold=1, counts=lambda exc: isinstance(exc, TimeoutError))
    circuit = Circuits().circuit("dep", breaker)
    dep = Dependency()

    await fail(circuit, dep, 3)  # ConnectionError: not counted
    assert circuit.state is CircuitState.CLOSED

    async def slow() -> None:
        raise TimeoutError

    with pytest.raises(TimeoutError):
        await circuit.call(slow)
    assert circuit.state is CircuitState.OPEN


async def test_a_successful_probe_after_the_recovery_timeout_closes_the_circuit() -> None:
    circuit, dep = circuit_of(threshold=1, timeout=FAST), Dependency()
    await fail(circuit, dep, 1)
    await half_open(circuit)

    dep.down = False
    assert await circuit.call(dep, "probe") == "probe"

    assert circuit.state is CircuitState.CLOSED
    assert await circuit.call(dep) == "ok"


async def test_a_failed_probe_opens_the_circuit_again_for_a_whole_timeout() -> None:
    circuit, dep = circuit_of(threshold=3, timeout=FAST), Dependency()
    await fail(circuit, dep, 3)
    await half_open(circuit)

    await fail(circuit, dep, 1)  # the probe: one failure is enough now

    assert circuit.state is CircuitState.OPEN
    with pytest.raises(CircuitOpen):
        await circuit.call(dep)
    assert dep.calls == 4


async def test_half_open_lets_one_probe_through_while_the_others_fail_fast() -> None:
    circuit, dep = circuit_of(threshold=1, timeout=FAST), Dependency()
    await fail(circuit, dep, 1)
    await half_open(circuit)
    release = asyncio.Event()
    probing = asyncio.Event()

    async def slow_probe() -> str:
        probing.set()
        await release.wait()
        return "recovered"

    probe = asyncio.create_task(circuit.call(slow_probe))
    await probing.wait()
    with pytest.raises(CircuitOpen):
        await circuit.call(dep)
    release.set()

    assert await probe == "recovered"
    assert circuit.state is CircuitState.CLOSED
    assert dep.calls == 1


async def test_a_cancelled_probe_gives_no_verdict_and_the_next_call_probes_again() -> None:
    circuit, dep = circuit_of(threshold=1, timeout=FAST), Dependency()
    await fail(circuit, dep, 1)
    await half_open(circuit)
    probing = asyncio.Event()

    async def hanging() -> None:
        probing.set()
        await asyncio.Event().wait()

    probe = asyncio.create_task(circuit.call(hanging))
    await probing.wait()
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe

    assert circuit.state is CircuitState.HALF_OPEN
    dep.down = False
    assert await circuit.call(dep) == "ok"
    assert circuit.state is CircuitState.CLOSED


async def test_guard_is_the_same_circuit_as_a_block() -> None:
    circuit, dep = circuit_of(threshold=2), Dependency()

    for _ in range(2):
        with pytest.raises(ConnectionError):
            async with circuit.guard():
                await dep()

    with pytest.raises(CircuitOpen):
        async with circuit.guard():
            await dep()
    assert dep.calls == 2


def test_one_name_with_two_configurations_is_refused() -> None:
    circuits = Circuits()
    circuits.circuit("dep", CircuitBreaker(failure_threshold=1))

    assert circuits.circuit("dep", CircuitBreaker(failure_threshold=1)) is circuits.get("dep")
    with pytest.raises(ConfigurationError, match="configured twice"):
        circuits.circuit("dep", CircuitBreaker(failure_threshold=2))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"failure_threshold": 0}, "failure_threshold must be at least 1"),
        ({"recovery_timeout": 0}, "recovery_timeout must be more than 0"),
    ],
)
def test_a_breaker_is_validated_when_made(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]


def test_a_breaker_without_the_extra_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "purgatory", None)  # import purgatory fails

    with pytest.raises(ConfigurationError) as raised:
        CircuitBreaker()

    assert str(raised.value) == "circuit breakers need purgatory: pip install 'wirebus[breaker]'"


# ---------------------------------------------------------------- state reported


async def test_transitions_are_reported_to_subscribers_in_order() -> None:
    circuits = Circuits()
    seen: list[tuple[str, CircuitState]] = []
    circuits.subscribe(lambda name, state: seen.append((name, state)))
    circuit = circuits.circuit("dep", CircuitBreaker(failure_threshold=1, recovery_timeout=FAST))
    dep = Dependency()

    await fail(circuit, dep, 1)
    await half_open(circuit)
    dep.down = False
    await circuit.call(dep)

    states = [CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN, CircuitState.CLOSED]
    assert seen == [("dep", s) for s in states]


async def test_the_breaker_metrics_follow_the_state_and_count_transitions() -> None:
    registry = CollectorRegistry()
    circuits = Circuits()
    circuit = circuits.circuit("dep", CircuitBreaker(failure_threshold=1, recovery_timeout=FAST))
    BreakerMetrics(registry).watch(circuits)
    dep = Dependency()

    def state() -> float | None:
        return registry.get_sample_value("wirebus_circuit_breaker_state", {"breaker": "dep"})

    def transitions(to: str) -> float | None:
        labels = {"breaker": "dep", "state": to}
        return registry.get_sample_value("wirebus_circuit_breaker_transitions_total", labels)

    assert state() == 0
    await fail(circuit, dep, 1)
    assert state() == 2
    await half_open(circuit)
    await fail(circuit, dep, 1)  # the probe fails
    assert (state(), transitions("open"), transitions("half_open")) == (2, 2, 1)
    await half_open(circuit)
    dep.down = False
    await circuit.call(dep)
    assert (state(), transitions("closed")) == (0, 1)


# ---------------------------------------------------------------- errors on the wire


def test_an_open_circuit_is_unavailable_with_retry_info_and_error_info() -> None:
    error = CircuitOpen("rates-api", retry_after=12.25)

    code, message, details = status_for(error, domain="shop", method="/x/Y")

    assert code is grpc.StatusCode.UNAVAILABLE
    assert "rates-api" in message
    status = status_pb2.Status.FromString(details)
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info)
    assert status.details[1].Unpack(retry)
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "CIRCUIT_OPEN",
        "shop",
        {"circuit": "rates-api"},
    )
    assert retry.retry_delay.ToNanoseconds() == 12_250_000_000


def test_an_open_circuit_is_a_retriable_unavailable_error() -> None:
    error = CircuitOpen("dep", retry_after=1.0)

    assert isinstance(error, Unavailable)
    assert is_retriable(error)
    assert Retry.worth_retrying(error)


# ---------------------------------------------------------------- in a mediator and a consumer


class Ping(Query[str]):
    pass


async def test_each_mediator_keeps_its_own_circuits() -> None:
    router = Router("ping")
    dep = Dependency()

    @router.handler(breaker=CircuitBreaker(failure_threshold=1, name="ping-dep"))
    async def ping(query: Ping) -> str:
        return await dep()

    app = App(routers=[router])
    async with app.mediator() as first, app.mediator() as second:
        with pytest.raises(ConnectionError):
            await first.send(Ping())
        with pytest.raises(CircuitOpen):
            await first.send(Ping())
        dep.down = False
        assert await second.send(Ping()) == "ok"
        open_, closed = first.circuits.get("ping-dep"), second.circuits.get("ping-dep")
    assert open_ is not None
    assert open_.state is CircuitState.OPEN
    assert closed is not None
    assert closed.state is CircuitState.CLOSED


async def test_a_consumer_retries_an_event_handler_whose_circuit_is_open() -> None:
    dep = Dependency()
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=FAST, name="payments")
    outcomes: list[str] = []

    async def capture(event: Cancelled, mediator: Mediator) -> None:
        circuit = mediator.circuits.circuit("payments", breaker)
        try:
            await circuit.call(dep)
        except Exception as exc:
            outcomes.append(type(exc).__name__)
            dep.down = False  # it recovers; the open circuit does not know yet
            raise

    router = Router("payments")
    router.handler(capture)
    app = app_of(router)
    mediator = app.mediator()
    sleep = FakeSleep()

    async def backoff(seconds: float) -> None:
        await sleep(seconds)
        if outcomes[-1] == "CircuitOpen":  # the second attempt failed fast: wait for half-open
            circuit = mediator.circuits.get("payments")
            assert circuit is not None
            await half_open(circuit)

    processor = processor_for(
        app, InMemoryBroker(), mediator=mediator, sleep=backoff, retry=Retry(attempts=4)
    )

    assert await processor.process(record_of(app, cancelled())) == "handled"
    assert outcomes == ["ConnectionError", "CircuitOpen"]  # retried, not dead-lettered
    assert dep.calls == 2  # the failure, then the probe that succeeded
    assert len(sleep.delays) == 2
