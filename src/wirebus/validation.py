"""Request (and event) validation from the ``buf.validate`` annotations of the protos.

The :class:`Validation` stage of the request pipeline checks each message
against the protovalidate rules written in its ``.proto`` file, after
authentication and before the app's behaviours::

    authentication -> validation -> the app's behaviours -> unit of work -> handler

A message that breaks a rule is refused with :class:`~wirebus.InvalidArgument`
listing one :class:`~wirebus.FieldViolation` per violated rule: the field's
path (``items[0].quantity``) and the rule's message and id (``must be greater
than or equal to 1 [int32.gte]``); the gateway answers INVALID_ARGUMENT with
a ``google.rpc.BadRequest``. With ``events=True`` events are checked before
every event handler too: a consumed event that breaks a rule is not
retriable, so it goes to the DLQ, its violations in ``wirebus_error_message``.

One protovalidate ``Validator`` serves the stage; :meth:`Validation.prepare`
(called by ``App.mediator()``) decides once per message type how to check it
(its protobuf class is checked as it is, a dataclass bound with ``proto=`` is
converted back with its compiled ``to_proto``; a type whose protos carry no
rule at all is not checked) and compiles each type's rules, so the first
call is not slower than the next.

Needs the ``validate`` extra (``pip install wirebus[validate]``): the
``protovalidate`` 2.x runtime, whose rules are those of the vendored
``proto/buf/validate/validate.proto``.

Example::

    app = App(name="shop", services=[orders_pb2], routers=[orders.router],
              validation=Validation(events=True))

    # proto/shop/orders/v1/orders.proto
    #   int32 quantity = 2 [(buf.validate.field).int32.gte = 1];
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message as ProtoMessage

from .errors import ConfigurationError, FieldViolation, InvalidArgument
from .messages import converter_of, proto_class_of
from .pipeline import CallNext, HandlerKind, MessageStream

if TYPE_CHECKING:
    from protovalidate import Violation
    from protovalidate._gen.buf.validate.validate_pb import FieldPath

__all__ = ["Validation", "field_violations"]

log = logging.getLogger(__name__)

MAX_MESSAGE_VIOLATIONS = 10
"""Violations named in the error's message (all of them travel as field violations)."""
MAX_MESSAGE_CHARS = 1000
"""The error message is cut at this length (a DLQ header keeps it whole)."""
_RULES_PACKAGE = "buf.validate."

Check = Callable[[Any], None]


class Validation:
    """The validation stage: messages are checked against their protovalidate rules.

    ``requests`` (default) checks requests and streams' requests, arriving
    over the gateway or sent in-process (each message of a client-streaming
    or bidirectional call as the handler reads it: a bad one fails the call
    with INVALID_ARGUMENT, the messages before it were read); ``events`` checks events before
    their handlers (in-process and consumed from a broker). ``fail_fast``
    stops at the first violation (cheaper for a large invalid message, but
    the caller learns of one problem at a time).

    Example::

        App(name="shop", routers=[...], validation=Validation(events=True))
    """

    stage_name = "validation"

    def __init__(self, *, requests: bool = True, events: bool = False, fail_fast: bool = False):
        if not (requests or events):
            raise ConfigurationError("Validation needs requests=True, events=True or both")
        try:
            import protovalidate
        except ImportError:  # pragma: no cover - the extra is part of dev
            raise ConfigurationError(
                "Validation needs protovalidate: pip install 'wirebus[validate]'"
            ) from None
        kinds: list[HandlerKind] = (
            ["request", "stream", "client_stream", "bidi"] if requests else []
        )
        if events:
            kinds.append("event")
        self.kinds: frozenset[HandlerKind] = frozenset(kinds)
        self.fail_fast = fail_fast
        self._validator = protovalidate.Validator()
        self._checks: dict[type, Check | None] = {}

    def prepare(self, message_types: Iterable[type]) -> None:
        """Decide how each type is checked and compile its rules (at start-up)."""
        for tp in message_types:
            if tp not in self._checks:
                self._checks[tp] = self._check_for(tp)

    def check(self, message: Any) -> None:
        """Raise :class:`~wirebus.InvalidArgument` if ``message`` breaks a rule of its proto.

        Example::

            Validation().check(orders_pb2.PlaceOrderRequest())  # InvalidArgument: 2 violations
        """
        tp = type(message)
        try:
            check = self._checks[tp]
        except KeyError:
            check = self._checks[tp] = self._check_for(tp)
        if check is not None:
            check(message)

    async def __call__(self, message: Any, call_next: CallNext) -> Any:
        if isinstance(message, MessageStream):  # each message as the handler reads it
            message.check_each(self.check)
        else:
            self.check(message)
        return await call_next(message)

    def _check_for(self, tp: type) -> Check | None:
        """How to check a message of ``tp``; ``None``: no rules to check."""
        proto_class = proto_class_of(tp)
        if proto_class is None or not has_rules(cast("Descriptor", proto_class.DESCRIPTOR)):
            return None
        self._warm(proto_class)
        validate = self._validator.collect_violations
        fail_fast = self.fail_fast
        full_name = proto_class.DESCRIPTOR.full_name

        def check_proto(message: ProtoMessage) -> None:
            found = validate(message, fail_fast=fail_fast)
            if found:
                raise invalid(full_name, found)

        if issubclass(tp, ProtoMessage):
            return check_proto
        converter = converter_of(tp)
        if converter is None:
            raise ConfigurationError(f"{tp.__qualname__} has no proto binding")
        to_proto = converter.to_proto

        def check_bound(message: Any) -> None:
            check_proto(to_proto(message))

        return check_bound

    def _warm(self, proto_class: type[ProtoMessage]) -> None:
        """Compile the rules of ``proto_class`` now (the validator caches them)."""
        import protovalidate

        try:
            self._validator.collect_violations(proto_class())
        except protovalidate.CompilationError as exc:
            name = proto_class.DESCRIPTOR.full_name
            raise ConfigurationError(
                f"the buf.validate rules of {name} are invalid: {exc}"
            ) from exc


def has_rules(descriptor: Descriptor) -> bool:
    """Whether ``descriptor`` or any message it holds carries a ``buf.validate`` rule."""
    seen: set[str] = set()
    pending = [descriptor]
    while pending:
        current = pending.pop()
        if current.full_name in seen:
            continue
        seen.add(current.full_name)
        if _annotated(current.GetOptions()) or any(
            _annotated(o.GetOptions()) for o in current.oneofs
        ):
            return True
        for field in current.fields:
            if _annotated(field.GetOptions()):
                return True
            if field.message_type is not None and field.type == FieldDescriptor.TYPE_MESSAGE:
                pending.append(field.message_type)
    return False


def _annotated(options: Any) -> bool:
    return any(f.full_name.startswith(_RULES_PACKAGE) for f, _ in options.ListFields())


def invalid(full_name: str, found: Sequence[Violation]) -> InvalidArgument:
    """The :class:`~wirebus.InvalidArgument` for the violations of a ``full_name`` message."""
    violations = field_violations(found)
    named = "; ".join(f"{v.field}: {v.description}" for v in violations[:MAX_MESSAGE_VIOLATIONS])
    more = len(violations) - MAX_MESSAGE_VIOLATIONS
    if more > 0:
        named += f"; and {more} more"
    text = f"{full_name} is not valid: {named}"
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 3] + "..."
    return InvalidArgument(text, violations=violations)


def field_violations(found: Iterable[Violation]) -> list[FieldViolation]:
    """protovalidate's violations as field violations: path, then message and rule id.

    Example::

        field_violations(validator.collect_violations(request))
        # [FieldViolation("items[0].quantity", "must be greater than or equal to 1 [int32.gte]")]
    """
    out = []
    for violation in found:
        pb = violation.proto
        path = field_path(pb.field) if pb.field is not None else ""
        if pb.for_key:
            path += " (key)"
        out.append(FieldViolation(path, f"{pb.message} [{pb.rule_id}]"))
    return out


def field_path(path: FieldPath) -> str:
    """``items[0].quantity``, ``labels["x"]``: a violation's field path as text."""
    text = ""
    for element in path.elements:
        name = element.field_name or f"#{element.field_number}"
        text = f"{text}.{name}" if text else name
        subscript = element.subscript
        if subscript is not None:
            value = subscript.value
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, str):
                value = f'"{value}"'
            text += f"[{value}]"
    return text
