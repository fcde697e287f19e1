"""Handler chains and fallback handlers: several callables behind one request handler."""

from __future__ import annotations

from typing import Any

import pytest
from dishka import Provider, Scope, provide

from wirebus import (
    PASS,
    App,
    CircuitBreaker,
    CircuitOpen,
    Command,
    ConfigurationError,
    Context,
    Event,
    Fallback,
    Next,
    NotFound,
    Pass,
    Query,
    Router,
)
from wirebus.errors import ChainExhausted


class GetQuote(Query[str]):
    symbol: str = ""


class Quoted(Event):
    symbol: str = ""


class Cache:
    def __init__(self) -> None:
        self.quotes: dict[str, str] = {"ACME": "acme@cache"}


class RatesApi:
    def __init__(self) -> None:
        self.calls = 0
        self.down = False

    async def quote(self, symbol: str) -> str | None:
        self.calls += 1
        if self.down:
            raise ConnectionError("rates api is down")
        return f"{symbol.lower()}@api" if symbol != "NONE" else None


class Deps(Provider):
    def __init__(self, cache: Cache, api: RatesApi) -> None:
        super().__init__()
        self._cache, self._api = cache, api

    @provide(scope=Scope.APP)
    def cache(self) -> Cache:
        return self._cache

    @provide(scope=Scope.APP)
    def api(self) -> RatesApi:
        return self._api


async def from_cache(query: GetQuote, cache: Cache) -> str | Pass:
    return cache.quotes.get(query.symbol, PASS)


class FromApi:
    """A class link: its constructor's dependencies are injected, as a handler's."""

    def __init__(self, api: RatesApi) -> None:
        self.api = api

    async def handle(self, query: GetQuote) -> str | Pass:
        quote = await self.api.quote(query.symbol)
        return PASS if quote is None else quote


async def last_close(query: GetQuote) -> str:
    return f"{query.symbol.lower()}@close"


def quotes_app(router: Router, api: RatesApi | None = None) -> App:
    return App(routers=[router], providers=[Deps(Cache(), api or RatesApi())])


# ---------------------------------------------------------------- chains


async def test_the_first_link_that_handles_answers_and_later_links_never_run() -> None:
    router = Router("quotes")
    api = RatesApi()
    router.chain(GetQuote, [from_cache, FromApi, last_close])

    async with quotes_app(router, api).mediator() as mediator:
        assert await mediator.send(GetQuote(symbol="ACME")) == "acme@cache"
        assert api.calls == 0


async def test_a_link_that_returns_pass_hands_the_request_to_the_next_link() -> None:
    router = Router("quotes")
    api = RatesApi()
    router.chain(GetQuote, [from_cache, FromApi, last_close])

    async with quotes_app(router, api).mediator() as mediator:
        assert await mediator.send(GetQuote(symbol="INIT")) == "init@api"
        assert await mediator.send(GetQuote(symbol="NONE")) == "none@close"
        assert api.calls == 2


async def test_a_chain_whose_every_link_passes_raises_chain_exhausted_naming_it() -> None:
    router = Router("quotes")
    router.chain(GetQuote, [from_cache, FromApi])

    async with quotes_app(router).mediator() as mediator:
        with pytest.raises(ChainExhausted, match=r"no link of chain\[.*from_cache -> .*FromApi\]"):
            await mediator.send(GetQuote(symbol="NONE"))


async def test_a_link_with_next_runs_the_rest_of_the_chain_and_may_change_its_result() -> None:
    router = Router("quotes")

    async def shouting(query: GetQuote, next: Next) -> str:
        return str(await next(query)).upper()

    router.chain(GetQuote, [shouting, from_cache, last_close])

    async with quotes_app(router).mediator() as mediator:
        assert await mediator.send(GetQuote(symbol="ACME")) == "ACME@CACHE"
        assert await mediator.send(GetQuote(symbol="XYZ")) == "XYZ@CLOSE"


async def test_links_get_their_context_and_their_events_are_delivered_once_it_succeeded() -> None:
    router = Router("quotes")
    seen: list[str] = []

    async def emitting(query: GetQuote, ctx: Context) -> str | Pass:
        ctx.emit(Quoted(symbol=query.symbol))
        return PASS

    @router.handler
    async def on_quoted(event: Quoted) -> None:
        seen.append(event.symbol)

    router.chain(GetQuote, [emitting, last_close])

    async with quotes_app(router).mediator() as mediator:
        assert await mediator.send(GetQuote(symbol="ACME")) == "acme@close"
    assert seen == ["ACME"]


async def test_behaviours_wrap_the_whole_chain_once() -> None:
    router = Router("quotes")
    router.chain(GetQuote, [from_cache, FromApi, last_close])
    wrapped: list[Any] = []

    async def recording(message: Any, call_next: Any) -> Any:
        result = await call_next(message)
        wrapped.append(result)
        return result

    app = quotes_app(router)
    app.add_behaviour(recording)
    async with app.mediator() as mediator:
        await mediator.send(GetQuote(symbol="NONE"))
    assert wrapped == ["none@close"]


def test_describe_prints_the_chain_links_in_order() -> None:
    router = Router("quotes")
    router.chain(GetQuote, [from_cache, FromApi, last_close])

    text = quotes_app(router).describe()

    line = next(line for line in text.splitlines() if line.strip().startswith("GetQuote"))
    assert line.index("from_cache") < line.index("FromApi") < line.index("last_close")
    assert "GetQuote [request] -> chain: " in line


def test_check_refuses_a_request_type_with_both_a_handler_and_a_chain() -> None:
    router = Router("quotes")
    router.chain(GetQuote, [from_cache, last_close])

    @router.handler
    async def get_quote(query: GetQuote) -> str:
        return "x"

    with pytest.raises(ConfigurationError, match=r"GetQuote has both a handler .*get_quote"):
        quotes_app(router).check()


def test_a_link_of_another_message_type_is_refused_at_registration() -> None:
    class Other(Command[str]):
        pass

    async def other(cmd: Other) -> str:
        return ""

    with pytest.raises(ConfigurationError, match=r"takes .*Other, but it is a link of the chain"):
        Router().chain(GetQuote, [from_cache, other])


async def test_a_missing_dependency_of_a_link_fails_when_the_mediator_is_built() -> None:
    router = Router("quotes")
    router.chain(GetQuote, [from_cache, last_close])

    with pytest.raises(ConfigurationError, match="Cache"):
        App(routers=[router]).mediator()


# ---------------------------------------------------------------- fallbacks


async def test_a_fallback_answers_when_the_handler_fails() -> None:
    router = Router("quotes")
    api = RatesApi()
    api.down = True

    @router.handler(fallback=last_close)
    async def live(query: GetQuote, api: RatesApi) -> str:
        return str(await api.quote(query.symbol))

    async with quotes_app(router, api).mediator() as mediator:
        assert await mediator.send(GetQuote(symbol="ACME")) == "acme@close"
        assert api.calls == 1


async def test_a_caller_error_passes_through_without_the_fallback() -> None:
    router = Router("quotes")

    @router.handler(fallback=last_close)
    async def live(query: GetQuote) -> str:
        raise NotFound(f"no symbol {query.symbol}")

    async with quotes_app(router).mediator() as mediator:
        with pytest.raises(NotFound):
            await mediator.send(GetQuote(symbol="ZZZ"))


async def test_fallback_on_limits_the_errors_it_answers_for() -> None:
    router = Router("quotes")
    errors: list[BaseException] = [TimeoutError(), RuntimeError("bug")]

    @router.handler(fallback=Fallback(last_close, on=(TimeoutError,)))
    async def live(query: GetQuote) -> str:
        raise errors.pop(0)

    async with quotes_app(router).mediator() as mediator:
        assert await mediator.send(GetQuote(symbol="A")) == "a@close"
        with pytest.raises(RuntimeError, match="bug"):
            await mediator.send(GetQuote(symbol="A"))


async def test_events_the_failed_handler_emitted_are_dropped_when_the_fallback_answers() -> None:
    router = Router("quotes")
    seen: list[str] = []

    @router.handler
    async def on_quoted(event: Quoted) -> None:
        seen.append(event.symbol)

    async def fallback(query: GetQuote, ctx: Context) -> str:
        ctx.emit(Quoted(symbol="from-fallback"))
        return "fallback"

    @router.handler(fallback=fallback)
    async def live(query: GetQuote, ctx: Context) -> str:
        ctx.emit(Quoted(symbol="from-failed-handler"))
        raise ConnectionError("down")

    async with quotes_app(router).mediator() as mediator:
        assert await mediator.send(GetQuote(symbol="A")) == "fallback"
    assert seen == ["from-fallback"]


async def test_an_open_breaker_runs_the_fallback_without_calling_the_handler() -> None:
    router = Router("quotes")
    api = RatesApi()
    api.down = True
    breaker = CircuitBreaker(failure_threshold=2, recovery_timeout=60)

    @router.handler(fallback=last_close, breaker=breaker)
    async def live(query: GetQuote, api: RatesApi) -> str:
        return str(await api.quote(query.symbol))

    async with quotes_app(router, api).mediator() as mediator:
        for _ in range(5):
            assert await mediator.send(GetQuote(symbol="A")) == "a@close"
        assert api.calls == 2  # the breaker opened after two failures


async def test_a_chain_with_a_breaker_and_no_fallback_fails_fast_once_open() -> None:
    router = Router("quotes")
    api = RatesApi()
    api.down = True
    router.chain(
        GetQuote,
        [from_cache, FromApi],
        breaker=CircuitBreaker(failure_threshold=1, recovery_timeout=60, name="rates"),
    )

    async with quotes_app(router, api).mediator() as mediator:
        with pytest.raises(ConnectionError):
            await mediator.send(GetQuote(symbol="B"))
        with pytest.raises(CircuitOpen) as raised:
            await mediator.send(GetQuote(symbol="ACME"))  # the cache would answer: not reached
    assert raised.value.circuit == "rates"
    assert api.calls == 1


def test_describe_names_the_fallback_and_the_breaker() -> None:
    router = Router("quotes")
    breaker = CircuitBreaker(failure_threshold=3, recovery_timeout=10, name="rates")

    @router.handler(fallback=Fallback(last_close, on=(TimeoutError,)), breaker=breaker)
    async def live(query: GetQuote) -> str:
        return ""

    line = next(line for line in quotes_app(router).describe().splitlines() if "GetQuote" in line)
    assert "live | fallback: " in line
    assert "last_close on TimeoutError" in line
    assert "breaker: rates (3 failures, 10s)" in line


def test_fallback_and_breaker_are_refused_on_event_handlers() -> None:
    router = Router()

    async def on_quoted(event: Quoted) -> None:
        pass

    with pytest.raises(ConfigurationError, match="are for request handlers"):
        router.handler(fallback=on_quoted)(on_quoted)


def test_a_fallback_of_another_message_type_is_refused() -> None:
    router = Router()

    async def other(event: Quoted) -> str:
        return ""

    with pytest.raises(ConfigurationError, match="cannot be the fallback of"):

        @router.handler(fallback=other)
        async def live(query: GetQuote) -> str:
            return ""


def test_a_chain_of_an_event_type_is_refused() -> None:
    async def on_quoted(event: Quoted) -> None:
        pass

    with pytest.raises(ConfigurationError, match="chain links and fallbacks handle requests"):
        Router().chain(Quoted, [on_quoted])
