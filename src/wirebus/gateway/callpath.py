"""What every port's call path shares: the response encoder and the deadline bound.

The gRPC port (``methods.py``, ``streaming.py``) and the Connect port
(``wirebus.connect.endpoints``) build their handlers from these, once per
method at start-up, so both answer the same bytes and end a call whose
deadline passed the same way:

- :func:`encoder_of` -- ``result -> bytes`` specialised for the handler's
  declared return type (one ``type(...) is`` check on the hot path).
- :func:`run_bounded` -- ``await run(message)`` cancelled when the deadline
  passes, raising :class:`DeadlinePassed` (DEADLINE_EXCEEDED).
- :func:`deadline_passed` -- the same mapping for a stream's own
  ``asyncio.timeout`` scope.
- For grpc.aio handlers: :func:`time_remaining` (``None`` without a
  deadline) and :func:`abort_with` (abort with a ``status_of`` triple).

Example::

    encode = encoder_of(route)
    reply = encode(await run_bounded(run, message, 2.5))
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
import grpc.aio
from google.protobuf.message import Message as ProtoMessage

from ..errors import WirebusError
from ..messages import converter_of, proto_class_of
from .errors import DETAILS_KEY

if TYPE_CHECKING:
    from .binding import MethodRoute

__all__ = [
    "DeadlinePassed",
    "ServicerContext",
    "abort_with",
    "deadline_passed",
    "encoder_of",
    "run_bounded",
    "time_remaining",
]

ServicerContext = grpc.aio.ServicerContext[Any, Any]
"""The grpc.aio context every gateway handler takes."""

# grpc answers time_remaining() with a huge number when the caller set no
# deadline (as CallInfo.from_grpc does, anything beyond a year is none).
_NO_DEADLINE = 365 * 24 * 3600.0


class DeadlinePassed(WirebusError):
    """The caller's deadline passed while the handler ran: it was cancelled.

    Example::

        status_for(DeadlinePassed("deadline exceeded"), domain="shop", method=path)
        # (StatusCode.DEADLINE_EXCEEDED, 'deadline exceeded', b'...')
    """

    code = grpc.StatusCode.DEADLINE_EXCEEDED


async def run_bounded(run: Callable[[Any], Awaitable[Any]], message: Any, seconds: float) -> Any:
    """``await run(message)``, cancelled after ``seconds`` (then :class:`DeadlinePassed`).

    A ``TimeoutError`` the handler raises itself passes through unchanged.

    Example::

        reply = await run_bounded(mediator.runner(GetOrder), query, 0.5)
    """
    scope = asyncio.timeout(seconds)
    try:
        async with scope:
            return await run(message)
    except TimeoutError:
        if scope.expired():
            raise DeadlinePassed("deadline exceeded: the handler was cancelled") from None
        raise  # the handler's own TimeoutError


def deadline_passed(exc: Exception, scope: asyncio.Timeout) -> Exception:
    """``exc``, or :class:`DeadlinePassed` when it is ``scope``'s expiry ending a stream.

    Example::

        scope = asyncio.timeout(seconds)
        try:
            async with scope: ...
        except Exception as exc:
            status = status_for(deadline_passed(exc, scope), domain=d, method=m)
    """
    if isinstance(exc, TimeoutError) and scope.expired():
        return DeadlinePassed("deadline exceeded: the stream was cancelled")
    return exc


def time_remaining(context: ServicerContext) -> float | None:
    """Seconds left of the caller's deadline; ``None`` without one (grpc's "infinite").

    Example::

        seconds = time_remaining(context)  # None: run unbounded
    """
    remaining = context.time_remaining()
    return None if remaining is None or remaining > _NO_DEADLINE else remaining


async def abort_with(
    context: ServicerContext, status: tuple[grpc.StatusCode, str, bytes]
) -> NoReturn:
    """End the call with ``status`` (``status_of``/``status_for``'s triple), details in the trailer.

    Example::

        await abort_with(context, status_of(grpc.StatusCode.UNAVAILABLE, "draining"))
    """
    code, message, details = status
    await context.abort(code, message, trailing_metadata=((DETAILS_KEY, details),))
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


def encoder_of(route: MethodRoute) -> Callable[[Any], bytes]:
    """``result -> bytes``: specialised for the handler's declared return type.

    The declared type (the response proto, or a message class converting to
    it; a stream's item type) is encoded without any lookup; anything else
    goes through the generic path, which refuses a result of another type.

    Example::

        encode = encoder_of(route)      # route: GetOrder -> OrderView (shop.orders.v1.Order)
        data = encode(view)             # view.proto().SerializeToString(), no lookup
    """
    response = route.response_proto
    declared = _declared_item(route)
    fast: Callable[[Any], bytes] | None = None
    if declared is response:
        fast = response.SerializeToString
    elif isinstance(declared, type) and proto_class_of(declared) is response:
        conv = converter_of(declared)
        to_proto: Callable[[Any], ProtoMessage] = conv.to_proto if conv else declared.proto  # type: ignore[attr-defined]

        def fast(result: Any) -> bytes:
            return to_proto(result).SerializeToString()

    def generic(result: Any) -> bytes:
        if result is None:
            return b""  # the default instance of any message
        if isinstance(result, ProtoMessage):
            if type(result) is not response:
                raise _wrong_type(route, result)
            return result.SerializeToString()
        if proto_class_of(type(result)) is response:
            return result.proto().SerializeToString()  # type: ignore[no-any-return]
        raise _wrong_type(route, result)

    if fast is None:
        return generic
    declared_type = declared

    def encode(result: Any) -> bytes:
        if type(result) is declared_type:
            return fast(result)
        return generic(result)

    return encode


def _declared_item(route: MethodRoute) -> Any:
    """The handler's declared return type; for a stream, the type of its items."""
    spec = route.spec
    declared: Any = spec.params.returns if spec else None
    if spec is not None and spec.kind in ("stream", "bidi"):
        args = getattr(declared, "__args__", ())
        declared = args[0] if args else None
    return declared


def _wrong_type(route: MethodRoute, result: object) -> TypeError:
    expected = route.response_proto.DESCRIPTOR.full_name
    return TypeError(f"{route.path} answers {expected}, got {type(result).__qualname__}")
