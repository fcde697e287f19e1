"""Handler chains, fallbacks and breakers: several callables behind one handler.

A **chain** (chain of responsibility, as python-cqrs's ``CORRequestHandler``)
handles one request type with an ordered list of links. Each link is a
handler -- a function or a class with ``handle``, its parameters injected as
any handler's -- that either handles the request (returns its result) or
passes it on: it returns :data:`PASS`, or takes a :class:`Next` parameter and
awaits it to run the rest of the chain (and may use or change what it
returns). The first link that handles answers; when every link passes,
:class:`~wirebus.errors.ChainExhausted` is raised.

A **fallback** runs, with the same request, when the handler (or chain)
fails -- by default with any error that is not the caller's fault (see
:func:`~wirebus.breaker.counts_as_failure`), or with the error types of
``Fallback(..., on=...)`` -- and whenever its circuit breaker is open, without
calling the handler. Events the failed handler emitted are dropped.

To the pipeline the whole is one handler: behaviours, validation and the
unit of work wrap it once, and the fallback runs inside the same unit of
work (what the failed handler wrote before failing is in that transaction
too: prefer fallbacks for reads).

Example::

    router.chain(GetQuote, [from_cache, from_rates_api, from_last_close])

    async def from_cache(query: GetQuote, cache: QuoteCache) -> Quote | Pass:
        return cache.get(query.symbol) or PASS

    async def from_rates_api(query: GetQuote, api: RatesApi, next: Next) -> Quote:
        quote = await api.quote(query.symbol)
        return quote if quote is not None else await next(query)

    @router.handler(fallback=Fallback(cached_quote, on=(TimeoutError,)),
                    breaker=CircuitBreaker(failure_threshold=5))
    async def live_quote(query: GetLiveQuote, api: RatesApi) -> Quote: ...
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import typing
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

from .breaker import CircuitBreaker, counts_as_failure
from .context import Context
from .errors import ChainExhausted, CircuitOpen, ConfigurationError

if TYPE_CHECKING:
    from dishka import AsyncContainer

    from .breaker import Circuits
    from .mediator import Mediator
    from .router import HandlerSpec

__all__ = ["PASS", "Composite", "Fallback", "Next", "Pass", "compile_composite"]

log = logging.getLogger(__name__)


class Pass:
    """The type of :data:`PASS`, for return annotations: ``-> Quote | Pass``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "PASS"


PASS: Final = Pass()
"""What a chain link returns to pass the request on to the next link."""


class Next(Protocol):
    """A chain link's parameter: awaiting it runs the rest of the chain.

    Example::

        async def audited(cmd: PlaceOrder, next: Next) -> OrderRef:
            ref = await next(cmd)
            log.info("placed %s", ref.order_id)
            return ref
    """

    def __call__(self, message: Any, /) -> Awaitable[Any]: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Fallback:
    """A fallback handler and the errors it answers for (``on``; default: not the caller's).

    Example::

        @router.handler(fallback=Fallback(cached_quote, on=(TimeoutError, ConnectionError)))
        async def live_quote(query: GetQuote, api: RatesApi) -> Quote: ...
    """

    handler: Callable[..., Any]
    on: tuple[type[BaseException], ...] | None = None

    def __post_init__(self) -> None:
        if self.on is not None and not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in self.on
        ):
            raise ConfigurationError(f"Fallback on= takes exception classes, not {self.on!r}")


@dataclasses.dataclass(frozen=True, slots=True)
class Part:
    """One callable of a composite: its spec (without ``Next``) and how to build it."""

    spec: HandlerSpec
    init: tuple[tuple[str, Any], ...]
    """A class's ``__init__`` dependencies (resolved per call, like a handler's)."""
    next_param: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class Composite:
    """What one registered request handler is made of: links, fallback, breaker."""

    links: tuple[Part, ...]
    chain: bool
    fallback: Part | None = None
    fallback_on: tuple[type[BaseException], ...] | None = None
    breaker: CircuitBreaker | None = None
    circuit: str = ""
    """The circuit's name (the breaker's ``name``, else the handler's)."""

    def deps(self) -> tuple[tuple[str, Any], ...]:
        """Every dependency of every part, uniquely named: checked when the app starts."""
        out: list[tuple[str, Any]] = []
        for i, part in enumerate(self.parts):
            out += [(f"_{i}_{name}", tp) for name, tp in (*part.spec.params.deps, *part.init)]
        return tuple(out)

    @property
    def parts(self) -> tuple[Part, ...]:
        """The links, then the fallback."""
        return (*self.links, self.fallback) if self.fallback else self.links

    def describe(self) -> str:
        """``chain: a -> b | fallback: f | breaker: name (5 failures, 30s)``."""
        text = " -> ".join(p.spec.name for p in self.links)
        text = f"chain: {text}" if self.chain else text
        if self.fallback is not None:
            on = ", ".join(t.__qualname__ for t in self.fallback_on or ())
            text += f" | fallback: {self.fallback.spec.name}" + (f" on {on}" if on else "")
        if self.breaker is not None:
            b = self.breaker
            text += (
                f" | breaker: {self.circuit}"
                f" ({b.failure_threshold} failures, {b.recovery_timeout:g}s)"
            )
        return text


def part_of(spec: HandlerSpec, *, in_chain: bool, localns: dict[str, Any]) -> Part:
    """A registered callable as a part; ``Next`` is allowed only in a chain link."""
    next_param = next((n for n, tp in spec.params.deps if tp is Next), None)
    if next_param is not None and not in_chain:
        raise ConfigurationError(f"{spec.name}: a Next parameter is for chain links only")
    if spec.kind == "event":
        raise ConfigurationError(f"{spec.name}: chain links and fallbacks handle requests")
    if spec.kind != "request":
        raise ConfigurationError(f"{spec.name}: chain links and fallbacks must be `async def`")
    params = dataclasses.replace(
        spec.params, deps=tuple(d for d in spec.params.deps if d[1] is not Next)
    )
    init = _init_deps(spec, localns) if spec.is_class else ()
    return Part(dataclasses.replace(spec, params=params), init, next_param)


def result_type(parts: Sequence[Part]) -> Any:
    """What the parts return, without ``Pass``: one type, a union, or nothing known."""
    found: list[Any] = []
    for part in parts:
        returns = part.spec.params.returns
        args = typing.get_args(returns) if _is_union(returns) else (returns,)
        for a in args:
            if a is not Pass and a is not inspect.Signature.empty and a not in found:
                found.append(a)
    if not found:
        return inspect.Signature.empty
    return found[0] if len(found) == 1 else typing.Union[tuple(found)]  # noqa: UP007


def _is_union(annotation: Any) -> bool:
    import types

    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _init_deps(spec: HandlerSpec, localns: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    init = spec.target.__init__
    if init is object.__init__:  # type: ignore[comparison-overlap]
        return ()
    try:
        hints = typing.get_type_hints(init, localns=localns)
    except NameError as exc:
        raise ConfigurationError(f"{spec.name}: cannot resolve an annotation ({exc})") from None
    deps = []
    for p in list(inspect.signature(init).parameters.values())[1:]:
        if p.name not in hints:
            raise ConfigurationError(f"{spec.name}: parameter {p.name!r} needs a type annotation")
        deps.append((p.name, hints[p.name]))
    return tuple(deps)


# ---------------------------------------------------------------- compilation

_PartCall = Callable[[Any, Context, Any, Any], Awaitable[Any]]
"""``call(message, ctx, scope, next)``."""


def compile_composite(
    composite: Composite,
    *,
    name: str,
    container: AsyncContainer | None,
    mediator: Mediator,
    circuits: Circuits,
) -> Callable[[Any, Context], Awaitable[Any]]:
    """``invoke(message, ctx)`` running the composite: made once, when the mediator is built."""
    links = tuple(_compile_part(p, mediator) for p in composite.links)
    if composite.chain:
        body = _chain(links, tuple(p.next_param is not None for p in composite.links), name)
    else:
        only = links[0]

        def body(message: Any, ctx: Context, scope: Any) -> Awaitable[Any]:
            return only(message, ctx, scope, None)

    circuit = (
        circuits.circuit(composite.circuit, composite.breaker)
        if composite.breaker is not None
        else None
    )
    fallback = _compile_part(composite.fallback, mediator) if composite.fallback else None
    guarded = _guarded(body, circuit, fallback, composite, name)
    if not any(p.spec.params.deps or p.init for p in composite.parts):

        def unscoped(message: Any, ctx: Context) -> Awaitable[Any]:
            return guarded(message, ctx, None)

        return unscoped
    if container is None:  # pragma: no cover - App always builds one
        raise ConfigurationError(f"{name} needs dependencies but the mediator has no container")

    async def scoped(message: Any, ctx: Context) -> Any:
        async with container() as scope:  # one scope for every part of the call
            return await guarded(message, ctx, scope)

    return scoped


def _chain(links: tuple[_PartCall, ...], wants_next: tuple[bool, ...], name: str) -> Any:
    count = len(links)
    exhausted = f"no link of {name} handled the request: every one passed it on"

    async def run(i: int, message: Any, ctx: Context, scope: Any) -> Any:
        while i < count:
            link, wants = links[i], wants_next[i]
            i += 1
            rest = _rest(run, i, ctx, scope) if wants else None
            result = await link(message, ctx, scope, rest)
            if result is not PASS:
                return result
        raise ChainExhausted(exhausted)

    def body(message: Any, ctx: Context, scope: Any) -> Awaitable[Any]:
        return run(0, message, ctx, scope)

    return body


def _rest(run: Any, i: int, ctx: Context, scope: Any) -> Next:
    def rest(message: Any) -> Awaitable[Any]:
        return typing.cast(Awaitable[Any], run(i, message, ctx, scope))

    return rest


def _guarded(
    body: Callable[[Any, Context, Any], Awaitable[Any]],
    circuit: Any,
    fallback: _PartCall | None,
    composite: Composite,
    name: str,
) -> Callable[[Any, Context, Any], Awaitable[Any]]:
    if fallback is None:
        if circuit is None:
            return body
        call = circuit.call

        def through(message: Any, ctx: Context, scope: Any) -> Awaitable[Any]:
            return typing.cast(Awaitable[Any], call(body, message, ctx, scope))

        return through
    on, own = composite.fallback_on, composite.circuit

    def falls_back(exc: Exception) -> bool:
        if isinstance(exc, CircuitOpen) and exc.circuit == own and circuit is not None:
            return True
        return isinstance(exc, on) if on is not None else counts_as_failure(exc)

    async def guarded(message: Any, ctx: Context, scope: Any) -> Any:
        mark = len(ctx.events)
        try:
            if circuit is not None:
                return await circuit.call(body, message, ctx, scope)
            return await body(message, ctx, scope)
        except Exception as exc:
            if not falls_back(exc):
                raise
            del ctx.events[mark:]  # what the failed handler emitted never happened
            log.warning("%s failed (%s); answering with its fallback", name, type(exc).__name__)
            return await fallback(message, ctx, scope, None)

    return guarded


def _compile_part(part: Part, mediator: Mediator) -> _PartCall:
    from .mediator import builtin_arguments, collect_events, declares_events

    p = part.spec.params
    fixed = builtin_arguments(p, mediator)
    target, is_class, deps, init = part.spec.target, part.spec.is_class, p.deps, part.init
    next_param = part.next_param
    returns_events = declares_events(p.returns)

    async def call(message: Any, ctx: Context, scope: Any, rest: Any) -> Any:
        kwargs = {n: get(ctx) for n, get in fixed}
        if next_param is not None:
            kwargs[next_param] = rest
        for dep, tp in deps:
            kwargs[dep] = await scope.get(tp)
        fn = target(**{d: await scope.get(tp) for d, tp in init}).handle if is_class else target
        result = await fn(message, **kwargs)
        if returns_events:
            collect_events(ctx, result)
        return result

    return call
