"""Descriptor-driven binding: each RPC method of a service -> one handler.

Bindings are computed once from the ``ServiceDescriptor`` of the generated
modules: the method's input type selects the handler registered for that
protobuf class (the class itself, or a message dataclass bound to it with
``proto=``). At start-up each route becomes a grpc.aio method handler that
decodes, runs the compiled mediator runner and encodes, with no per-call
reflection (see ``server.py``).

Each of the four RPC shapes binds to one kind of handler:

==================  =====================================================
``unary_unary``     ``async def h(msg: X) -> Y`` (kind ``request``)
``unary_stream``    ``async def h(msg: X) -> AsyncIterator[Y]`` (``stream``)
``stream_unary``    ``async def h(msgs: AsyncIterator[X]) -> Y`` (``client_stream``)
``stream_stream``   ``async def h(msgs: AsyncIterator[X]) -> AsyncIterator[Y]`` (``bidi``)
==================  =====================================================
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable, Sequence
from types import ModuleType
from typing import Any, Literal, cast

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message as ProtoMessage

from ..errors import ConfigurationError
from ..messages import converter_of, proto_class_of
from ..router import HandlerKind, HandlerSpec
from .request_limits import RequestLimits

__all__ = [
    "DEFAULT_LIMITS",
    "MethodRoute",
    "RequestLimits",
    "resolve_routes",
    "service_descriptors",
]

DEFAULT_LIMITS = RequestLimits()
"""The limits a route's decoder applies unless given others."""

Arity = Literal["unary_unary", "unary_stream", "stream_unary", "stream_stream"]

_KIND_OF: dict[str, HandlerKind] = {
    "unary_unary": "request",
    "unary_stream": "stream",
    "stream_unary": "client_stream",
    "stream_stream": "bidi",
}
_GRPC_TYPES: dict[str, str] = {
    "unary_unary": "unary",
    "unary_stream": "server_stream",
    "stream_unary": "client_stream",
    "stream_stream": "bidi_stream",
}
_SHAPE_OF: dict[str, str] = {
    "request": "a coroutine function",
    "stream": "an async generator",
    "client_stream": "a coroutine function taking AsyncIterator[...]",
    "bidi": "an async generator taking AsyncIterator[...]",
}


@dataclasses.dataclass(frozen=True, slots=True)
class MethodRoute:
    """One RPC method and the handler it is bound to (``None``: unbound)."""

    service: str
    method: str
    arity: Arity
    request_proto: type[ProtoMessage]
    response_proto: type[ProtoMessage]
    spec: HandlerSpec | None

    @property
    def path(self) -> str:
        """The gRPC path, ``/package.Service/Method``."""
        return f"/{self.service}/{self.method}"

    @property
    def grpc_type(self) -> str:
        """The ``grpc_type`` label of the method's metrics (both ports): ``unary``,
        ``server_stream``, ``client_stream`` or ``bidi_stream``."""
        return _GRPC_TYPES[self.arity]

    def decoder(self, limits: RequestLimits = DEFAULT_LIMITS) -> Any:
        """``bytes -> message`` for the handler's message type (parse, check, from_proto).

        The parsed request is checked against ``limits`` before it is
        converted (``RequestLimitExceeded``); a request type that cannot
        hold a repeated field is not checked at all.

        Example::

            decode = route.decoder(RequestLimits(max_repeated=1_000))
            command = decode(request_bytes)
        """
        parse = self.request_proto.FromString
        check = limits.checker(cast("Descriptor", self.request_proto.DESCRIPTOR))
        if self.spec is None or self.spec.message_type is self.request_proto:
            if check is None:
                return parse
            return _checked(parse, check, lambda m: m)
        conv = converter_of(self.spec.message_type)
        if conv is None:
            raise ConfigurationError(f"{self.spec.message_type.__qualname__} has no proto binding")
        from_proto_fn = conv.from_proto
        if check is None:
            return lambda data: from_proto_fn(parse(data))
        return _checked(parse, check, from_proto_fn)


def _checked(
    parse: Callable[[bytes], ProtoMessage],
    check: Callable[[ProtoMessage], None],
    convert: Callable[[ProtoMessage], Any],
) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        message = parse(data)
        check(message)
        return convert(message)

    return decode


def service_descriptors(
    sources: Iterable[ModuleType | ServiceDescriptor],
) -> list[ServiceDescriptor]:
    """Services of generated ``*_pb2`` modules, or service descriptors given directly."""
    out: list[ServiceDescriptor] = []
    for source in sources:
        if isinstance(source, ServiceDescriptor):
            out.append(source)
        elif isinstance(source, ModuleType) and hasattr(source, "DESCRIPTOR"):
            out.extend(source.DESCRIPTOR.services_by_name.values())
        else:
            raise ConfigurationError(
                f"services= takes generated *_pb2 modules or ServiceDescriptors, not {source!r}"
            )
    return out


def _arity(method: MethodDescriptor) -> Arity:
    client, server = method.client_streaming, method.server_streaming
    return ("stream" if client else "unary") + "_" + ("stream" if server else "unary")  # type: ignore[return-value]


def resolve_routes(
    services: Sequence[ServiceDescriptor],
    specs: Sequence[HandlerSpec],
    *,
    allow_unbound: bool = False,
) -> list[MethodRoute]:
    """Bind every method; raise one ``ConfigurationError`` listing every problem."""
    by_proto: dict[type, list[HandlerSpec]] = {}
    for spec in specs:
        if spec.kind == "event":
            continue
        proto = proto_class_of(spec.message_type)
        if proto is not None:
            by_proto.setdefault(proto, []).append(spec)
    routes: list[MethodRoute] = []
    problems: list[str] = []
    for service in services:
        for method in service.methods:
            route, problem = _route(service, method, by_proto)
            if problem:
                problems.append(problem)
            if route.spec is None and not allow_unbound and not problem:
                want = _KIND_OF[route.arity]
                problems.append(
                    f"{route.path} has no handler for {method.input_type.full_name}"
                    + (f" ({_SHAPE_OF[want]} handler)" if want != "request" else "")
                )
            routes.append(route)
    if problems:
        raise ConfigurationError(
            "the gateway cannot bind every method:\n  - "
            + "\n  - ".join(problems)
            + "\n(register the handlers, or pass allow_unbound=True to answer UNIMPLEMENTED)"
        )
    return routes


def _route(
    service: ServiceDescriptor, method: MethodDescriptor, by_proto: dict[type, list[HandlerSpec]]
) -> tuple[MethodRoute, str | None]:
    request = message_factory.GetMessageClass(method.input_type)
    response = message_factory.GetMessageClass(method.output_type)
    arity = _arity(method)
    want = _KIND_OF[arity]
    # one message type can be a unary method's and a streaming method's request
    # (PlaceOrder and ImportOrders): only handlers taking it the same way compete
    streams_in = method.client_streaming
    candidates = [s for s in by_proto.get(request, ()) if s.params.streams_in is streams_in]
    route = MethodRoute(service.full_name, method.name, arity, request, response, None)
    path = route.path
    matching = [s for s in candidates if s.kind == want]
    if len(matching) > 1:
        names = ", ".join(s.name for s in matching)
        return route, f"{path}: several handlers take {request.DESCRIPTOR.full_name}: {names}"
    if not matching:
        if candidates:
            names = ", ".join(s.name for s in candidates)
            return route, f"{path} needs {_SHAPE_OF[want]} handler, but {names} is not"
        return route, None
    spec = matching[0]
    problem = _check_returns(path, spec, response)
    return dataclasses.replace(route, spec=spec), problem


def _check_returns(path: str, spec: HandlerSpec, response: type[ProtoMessage]) -> str | None:
    returns = spec.params.returns
    if returns is inspect.Signature.empty or returns is None or returns is type(None):
        return None
    if spec.kind in ("stream", "bidi"):
        args = getattr(returns, "__args__", ())
        returns = args[0] if args else None
    if not isinstance(returns, type):
        return None
    bound = proto_class_of(returns)
    if bound is not None and bound is not response:
        return (
            f"{path} answers {response.DESCRIPTOR.full_name} but {spec.name}"
            f" returns {returns.__qualname__} ({bound.DESCRIPTOR.full_name})"
        )
    return None
