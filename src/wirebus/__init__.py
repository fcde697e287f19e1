"""wirebus: proto-first CQRS for Python services.

Commands and queries are defined in ``.proto`` files, served over gRPC by a
gateway that dispatches into an in-process mediator; domain events travel as
protobuf messages.

Example::

    from wirebus import App, Command, Context, Router

    router = Router("orders")

    @router.handler
    async def place_order(cmd: PlaceOrder, ctx: Context) -> OrderRef:
        ctx.emit(OrderPlaced(...))
        return OrderRef(order_id="...")

    app = App(name="shop", services=[orders_pb2], routers=[router])
"""

from __future__ import annotations

from .app import App
from .auth import (
    Authentication,
    Identity,
    JWTAuthenticator,
    StaticTokens,
    current_identity,
    require_scopes,
)
from .context import CallInfo, Context, current_call, current_context
from .errors import (
    Aborted,
    AlreadyExists,
    ConfigurationError,
    ConversionError,
    ConversionSchemaError,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    HandlerNotFound,
    InvalidArgument,
    LifecycleError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    WirebusError,
)
from .gateway import Gateway, GatewayConfig
from .mediator import Mediator
from .messages import Command, Event, Message, Query, Request
from .pipeline import Behaviour, CallNext, Stage
from .retry import Retry
from .router import Router
from .saga.definition import Saga
from .validation import Validation

__all__ = [
    "Aborted",
    "AlreadyExists",
    "App",
    "Authentication",
    "Behaviour",
    "CallNext",
    "CallInfo",
    "Command",
    "ConfigurationError",
    "Context",
    "ConversionError",
    "ConversionSchemaError",
    "DomainError",
    "Event",
    "FailedPrecondition",
    "FieldViolation",
    "Gateway",
    "GatewayConfig",
    "HandlerNotFound",
    "Identity",
    "InvalidArgument",
    "JWTAuthenticator",
    "LifecycleError",
    "Mediator",
    "Message",
    "NotFound",
    "PermissionDenied",
    "Query",
    "Request",
    "ResourceExhausted",
    "Retry",
    "Router",
    "Saga",
    "Stage",
    "StaticTokens",
    "Unauthenticated",
    "Unavailable",
    "Validation",
    "WirebusError",
    "current_call",
    "current_context",
    "current_identity",
    "require_scopes",
]

__version__ = "0.1.0"
