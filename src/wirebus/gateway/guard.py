"""Credentials for grpc's own services (health, reflection) when a deployment asks for them.

Health checks and reflection are served by grpc's servicers beside wirebus'
pipeline, so they are public by default: a load balancer or a Kubernetes
probe checks health without a token. With ``Authentication(...,
protect_health=True, protect_reflection=True)`` the gateway registers them
through a :class:`GuardedServer`, which puts the app's authentication in
front of each of their method handlers: a call without credentials gets
UNAUTHENTICATED, bad credentials too, and a rule that does not hold
PERMISSION_DENIED, exactly as for the app's methods. The app's own method
handlers are registered on the server directly, so their path is unchanged
(no server interceptor runs on every call).

Example::

    guarded = GuardedServer(server, app.authentication, domain="shop")
    health_pb2_grpc.add_HealthServicer_to_server(servicer, guarded)
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
import grpc.aio

from ..context import CallInfo
from ..errors import WirebusError
from .errors import DETAILS_KEY, status_for

if TYPE_CHECKING:
    from ..auth import Authentication

__all__ = ["GuardedServer"]

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class GuardedServer:
    """Registers method handlers on ``server``, each checking credentials first.

    It stands in for the server where grpc's generated ``add_*_to_server``
    functions take one: only the two methods they call are offered.
    """

    def __init__(self, server: grpc.aio.Server, authentication: Authentication, *, domain: str):
        self.server = server
        self.authentication = authentication
        self.domain = domain

    def add_generic_rpc_handlers(
        self, handlers: Iterable[grpc.GenericRpcHandler[Any, Any]]
    ) -> None:
        self.server.add_generic_rpc_handlers(tuple(_GuardedGeneric(h, self) for h in handlers))

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Handler]) -> None:
        guarded = {m: self.guard(f"/{service}/{m}", h) for m, h in handlers.items()}
        self.server.add_registered_method_handlers(service, guarded)  # type: ignore[attr-defined]

    async def admit(self, path: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """Abort the call unless its credentials pass the app's authentication."""
        try:
            await self.authentication.admit(CallInfo.from_grpc(path, context))
        except WirebusError as exc:
            code, message, details = status_for(exc, domain=self.domain, method=path)
            await context.abort(code, message, trailing_metadata=((DETAILS_KEY, details),))

    def guard(self, path: str, handler: Handler) -> Handler:
        """``handler`` with :meth:`admit` before its behaviour (any of the four arities)."""
        for arity in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            behaviour = getattr(handler, arity)
            if behaviour is not None:
                guarded = _guarded(behaviour, path, self.admit)
                return handler._replace(**{arity: guarded})  # type: ignore[attr-defined, no-any-return]
        return handler


Admit = Callable[[str, Any], Any]


def _guarded(behaviour: Callable[..., Any], path: str, admit: Admit) -> Callable[..., Any]:
    """``behaviour`` run after ``admit``; an async generator stays one (grpc tells them apart)."""
    if inspect.isasyncgenfunction(behaviour):

        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            await admit(path, context)
            async for response in behaviour(request, context):
                yield response

        return stream

    async def call(request: Any, context: Any) -> Any:
        await admit(path, context)
        return await behaviour(request, context)

    return call


class _GuardedGeneric(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """A generic handler whose method handlers are guarded (each wrapped once)."""

    def __init__(self, inner: grpc.GenericRpcHandler[Any, Any], owner: GuardedServer) -> None:
        self.inner = inner
        self.owner = owner
        self.wrapped: dict[str, Handler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        path: str = handler_call_details.method
        handler = self.wrapped.get(path)
        if handler is None:
            found = self.inner.service(handler_call_details)
            if found is None:  # not one of its methods: nothing kept (any path may be asked)
                return None
            handler = self.wrapped[path] = self.owner.guard(path, found)
        return handler
