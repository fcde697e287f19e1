"""Signature analysis: how to call one handler, read once when it is registered.

A handler's first parameter is the message -- or, annotated
``AsyncIterator[X]`` (or ``AsyncIterable[X]``), the incoming messages of a
client-streaming or bidirectional call (``streams_in``; ``message_type`` is
then ``X``). Every other parameter is resolved by its annotation:

- :class:`~wirebus.Context` -- this call's context: ``ctx.emit(event)``;
- :class:`~wirebus.CallInfo` -- the transport call's metadata, peer and deadline;
- :class:`~wirebus.Mediator` -- the mediator, to send further requests;
- anything else -- a dependency, resolved by dishka (``wirebus.di``).

Example::

    params = analyse(place_order, "shop.place_order")
    params.message_type        # PlaceOrder
    params.deps                # (("orders", OrderStore),)
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import typing
from collections.abc import Callable
from typing import Any

from .context import CallInfo, Context
from .errors import ConfigurationError
from .mediator import Mediator

__all__ = ["HandlerParams", "analyse"]


@dataclasses.dataclass(frozen=True, slots=True)
class HandlerParams:
    """How to call one handler, decided at registration."""

    message_type: type
    context: str | None
    call_info: str | None
    mediator: str | None
    deps: tuple[tuple[str, Any], ...]
    returns: Any
    streams_in: bool = False
    """The first parameter is ``AsyncIterator[X]``: the handler takes a stream of ``X``."""

    @property
    def plain(self) -> bool:
        """True when the handler takes only the message."""
        return not (self.context or self.call_info or self.mediator or self.deps)


def analyse(
    func: Callable[..., Any],
    owner: str,
    *,
    skip_self: bool = False,
    localns: dict[str, Any] | None = None,
) -> HandlerParams:
    """Read a handler's signature: message type, injected parameters, return type."""
    try:
        hints = typing.get_type_hints(func, localns=localns)
    except NameError as exc:
        raise ConfigurationError(f"{owner}: cannot resolve an annotation ({exc})") from None
    params = list(inspect.signature(func).parameters.values())
    if skip_self:
        params = params[1:]
    if not params or params[0].name not in hints:
        raise ConfigurationError(
            f"{owner}: the first parameter must be the message, annotated with its type"
        )
    first, rest = params[0], params[1:]
    found: dict[str, str | None] = {"context": None, "call_info": None, "mediator": None}
    deps: list[tuple[str, Any]] = []
    for p in rest:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise ConfigurationError(f"{owner}: *args/**kwargs cannot be injected ({p.name})")
        if p.name not in hints:
            raise ConfigurationError(f"{owner}: parameter {p.name!r} needs a type annotation")
        tp = hints[p.name]
        slot = {Context: "context", CallInfo: "call_info", Mediator: "mediator"}.get(tp)
        if slot is not None:
            found[slot] = p.name
        else:
            deps.append((p.name, tp))
    message_type, streams_in = _message_of(hints[first.name])
    return HandlerParams(
        message_type=message_type,
        context=found["context"],
        call_info=found["call_info"],
        mediator=found["mediator"],
        deps=tuple(deps),
        returns=hints.get("return", inspect.Signature.empty),
        streams_in=streams_in,
    )


_STREAM_ORIGINS = (collections.abc.AsyncIterator, collections.abc.AsyncIterable)


def _message_of(annotation: Any) -> tuple[Any, bool]:
    """``(X, True)`` for ``AsyncIterator[X]``/``AsyncIterable[X]``, else ``(annotation, False)``."""
    if typing.get_origin(annotation) in _STREAM_ORIGINS:
        args = typing.get_args(annotation)
        return (args[0] if args else Any), True
    return annotation, False
