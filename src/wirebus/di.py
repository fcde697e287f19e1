"""Dependency injection of handler parameters (dishka) and the per-call scope.

The parameters a handler takes besides its message are read once by
``wirebus.signature.analyse``. ``Context``, ``CallInfo`` and ``Mediator`` are
passed directly; everything else is resolved by dishka from a per-call
``Scope.REQUEST`` container built from the app's providers. The container is
built, and every handler's dependencies checked, when the mediator is built,
so a missing provider fails start-up, naming the handler.

Example::

    from dishka import Provider, Scope, provide

    class Repos(Provider):
        orders = provide(InMemoryOrders, provides=Orders, scope=Scope.APP)

    @router.handler
    async def place_order(cmd: PlaceOrder, orders: Orders, ctx: Context, call: CallInfo) -> Ref:
        ...

    app = App(..., providers=[Repos()])
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from dishka import AsyncContainer, Provider, Scope, make_async_container

from .auth import Identity, current_identity
from .context import CallInfo, current_call
from .errors import ConfigurationError
from .mediator import Mediator

if TYPE_CHECKING:
    from .router import HandlerSpec

__all__ = ["build_container"]


def build_container(
    providers: Iterable[Provider],
    specs: Sequence[HandlerSpec],
    mediator: Callable[[], Mediator],
) -> AsyncContainer:
    """The app's container: its providers, the built-ins, and a check per handler.

    ``mediator()`` returns the mediator being built (it does not exist yet
    when the container is made).
    """
    internal = Provider(scope=Scope.REQUEST)
    internal.provide(current_call, provides=CallInfo)
    internal.provide(current_identity, provides=Identity)
    internal.provide(mediator, provides=Mediator, scope=Scope.APP)
    for spec in specs:
        if spec.is_class:
            internal.provide(spec.target, scope=Scope.REQUEST)
        if spec.params.deps:
            _require(internal, spec)
    try:
        return make_async_container(*providers, internal)
    except Exception as exc:  # dishka's graph errors name the missing type and its user
        raise ConfigurationError(f"dependency wiring is incomplete: {exc}") from exc


class _Needs:
    """Marker types whose factories make dishka validate each handler's dependencies."""


def _require(provider: Provider, spec: HandlerSpec) -> None:
    marker = type(f"Handler[{spec.name}]", (_Needs,), {})
    params = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=tp)
        for name, tp in spec.params.deps
    ]

    def needs(**_: Any) -> Any:  # never called: only its signature is read
        return None

    needs.__signature__ = inspect.Signature(params, return_annotation=marker)  # type: ignore[attr-defined]
    needs.__annotations__ = {**dict(spec.params.deps), "return": marker}
    needs.__qualname__ = needs.__name__ = f"handler {spec.name}"
    provider.provide(needs, provides=marker, scope=Scope.REQUEST)
