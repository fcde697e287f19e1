"""The wirebus error tree.

Every error wirebus raises, and every domain error a handler raises on
purpose, derives from :class:`WirebusError`. Each class carries the gRPC
status ``code`` it maps to; the gateway turns it into a status with
``google.rpc.Status`` details in exactly one place (``gateway/errors.py``)::

    WirebusError                      (code=INTERNAL; base, never raised bare by wirebus)
    ├── DomainError                   errors handlers raise on purpose; carry ErrorInfo ``reason``
    │   ├── InvalidArgument           INVALID_ARGUMENT, with BadRequest ``violations``
    │   │   └── DataRejected          the database refused a value the caller sent
    │   ├── NotFound                  NOT_FOUND
    │   ├── AlreadyExists             ALREADY_EXISTS
    │   ├── FailedPrecondition        FAILED_PRECONDITION
    │   ├── PermissionDenied          PERMISSION_DENIED
    │   ├── Unauthenticated           UNAUTHENTICATED
    │   ├── ResourceExhausted         RESOURCE_EXHAUSTED   (retriable)
    │   │   └── EventTooLarge         an emitted event is larger than the producer can send
    │   │                             (not retriable; refused at commit, nothing persisted)
    │   ├── Aborted                   ABORTED              (retriable)
    │   └── Unavailable               UNAVAILABLE          (retriable)
    │       └── CircuitOpen               a circuit breaker is open: failed fast, with RetryInfo
    ├── ConfigurationError            wiring is wrong; raised at definition or start-up
    │   ├── ConversionSchemaError     a dataclass cannot be mapped to its proto
    │   ├── UnregisteredEvent         a travelling event the app has no topic for
    │   └── UnknownEventType          an event type the app does not know (publish, or a
    │                                 consumed record's ``ce_type``)
    ├── ConversionError               a value cannot be converted at run time
    │   └── RequestLimitExceeded      INVALID_ARGUMENT: a request over ``RequestLimits``
    ├── HandlerNotFound               send/stream with no handler registered (UNIMPLEMENTED)
    ├── ChainExhausted                every link of a handler chain passed the request on
    ├── LifecycleError                start after stop, stop before start misuse
    ├── MalformedEvent                a record's CloudEvents headers are missing or broken
    ├── PublishError                  UNAVAILABLE (retriable): the broker did not acknowledge
    │   └── HeldBack                  not sent: an earlier record of its key failed first
    ├── ConsumeError                  UNAVAILABLE: the broker could not be read (connect, fetch)
    ├── ProcessingInterrupted         (wirebus.consumer) DLQ or inbox away; retry (retriable)
    └── UndecodableEvent              (wirebus.consumer) a value is not its ``ce_type``

Example::

    from wirebus import NotFound

    raise NotFound("order 42 does not exist", reason="ORDER_NOT_FOUND",
                   metadata={"order_id": "42"})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc

__all__ = [
    "Aborted",
    "AlreadyExists",
    "ChainExhausted",
    "CircuitOpen",
    "ConfigurationError",
    "ConsumeError",
    "ConversionError",
    "ConversionSchemaError",
    "DataRejected",
    "DomainError",
    "EventTooLarge",
    "FailedPrecondition",
    "FieldViolation",
    "HandlerNotFound",
    "HeldBack",
    "InvalidArgument",
    "LifecycleError",
    "MalformedEvent",
    "NotFound",
    "PermissionDenied",
    "PublishError",
    "RequestLimitExceeded",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "UnknownEventType",
    "UnregisteredEvent",
    "WirebusError",
]


class WirebusError(Exception):
    """Root of every wirebus error.

    ``code`` is the gRPC status the gateway answers with; ``retriable`` says
    whether the same call may succeed if tried again unchanged.
    """

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    retriable: bool = False


class ConfigurationError(WirebusError):
    """The app's wiring is wrong: raised when a class is defined or the app starts."""


class ConversionSchemaError(ConfigurationError):
    """A message dataclass cannot be mapped onto its protobuf class."""


class ConversionError(WirebusError):
    """A value could not be converted between a dataclass and a protobuf message."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class HandlerNotFound(WirebusError):
    """No handler is registered for the message sent."""

    code = grpc.StatusCode.UNIMPLEMENTED


class UnregisteredEvent(ConfigurationError):
    """An event bound to a protobuf class (so it travels) that the app did not register."""


class LifecycleError(WirebusError):
    """A component was used outside its lifecycle (for example started twice)."""


class UnknownEventType(ConfigurationError):
    """An event type the app does not know: not registered, so it cannot be published,
    or a consumed record's ``ce_type`` names no registered type (it is dead-lettered).

    Example::

        try:
            await publisher.publish(Unregistered())
        except UnknownEventType as exc:
            print(exc)   # "Unregistered is not registered: add it to App(events=[...]) ..."
    """


class MalformedEvent(WirebusError):
    """A record's CloudEvents headers are missing or malformed (the record is dead-lettered).

    Example::

        try:
            Attributes.from_headers([])
        except MalformedEvent as exc:
            print(exc)   # "missing CloudEvents header(s): ce_specversion, ce_id, ..."
    """


class PublishError(WirebusError):
    """The broker did not acknowledge a record; says which topic and why.

    ``retriable`` follows the cause (a broker that is down: yes; a record that
    is too large: no); ``producer_state`` says the producer, not the record, is
    at fault (a new producer fixes it).

    Example::

        try:
            await publisher.send_records(records)
        except PublishError as exc:
            print(exc.topic, exc.reason, exc.retriable)
    """

    code = grpc.StatusCode.UNAVAILABLE
    retriable = True
    producer_state = False
    """The producer, not the record, is at fault (a new producer fixes it)."""

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"publishing to {topic!r} failed: {reason}")
        self.topic = topic
        self.reason = reason


class HeldBack(PublishError):
    """Not sent: an earlier record of the same key failed in this call, and order comes first.

    Example::

        results = await publisher.send_records_settled(records)
        held = [r for r in results if isinstance(r, HeldBack)]
    """

    retriable = True


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid request field: ``field`` is a path such as ``items[0].quantity``."""

    field: str
    description: str


class DomainError(WirebusError):
    """An error a handler raises on purpose; travels as ``google.rpc.ErrorInfo``.

    ``reason`` is a stable UPPER_SNAKE identifier clients can switch on; it
    defaults to the class's ``default_reason``.  ``metadata`` adds context.

    Example::

        raise FailedPrecondition("order is already cancelled", reason="ORDER_CANCELLED")
    """

    default_reason: str = "DOMAIN_ERROR"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata: dict[str, str] = dict(metadata or {})


class InvalidArgument(DomainError):
    """The request is malformed; ``violations`` name the offending fields.

    Example::

        raise InvalidArgument("order has no items",
                              violations=[FieldViolation("items", "must not be empty")])
    """

    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        *,
        violations: Sequence[FieldViolation] = (),
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.violations = tuple(violations)


class NotFound(DomainError):
    """The entity the request names does not exist."""

    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    """The entity the request would create exists already."""

    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    """The system is not in a state where the request can run."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class PermissionDenied(DomainError):
    """The caller is known but not allowed to do this."""

    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class Unauthenticated(DomainError):
    """The caller did not prove who it is."""

    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class ResourceExhausted(DomainError):
    """A quota or limit is used up; retry later."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"
    retriable = True


class EventTooLarge(ResourceExhausted):
    """An emitted event encodes to a record larger than the producer can send.

    Raised when the event is written to the outbox, so the unit of work
    rolls back and nothing of the call persists: an event accepted with a
    larger record could never be published. RESOURCE_EXHAUSTED is gRPC's
    own status for a message over a size limit; unlike other quotas, the same
    call never succeeds when tried again unchanged, so it is not retriable.
    ``metadata`` names the ``event_type``, its ``record_bytes`` and the
    ``limit_bytes``.

    Example::

        try:
            await mediator.send(PlaceOrder(...))       # its OrderPlaced is 1.2 MB
        except EventTooLarge as exc:
            print(exc.metadata["record_bytes"], exc.metadata["limit_bytes"])
    """

    default_reason = "EVENT_TOO_LARGE"
    retriable = False


class Aborted(DomainError):
    """A concurrency conflict aborted the request; retry it."""

    code = grpc.StatusCode.ABORTED
    default_reason = "ABORTED"
    retriable = True


class Unavailable(DomainError):
    """A dependency is unavailable for now; retry later."""

    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"
    retriable = True


class CircuitOpen(Unavailable):
    """A circuit breaker is open: the call failed fast, without reaching what it guards.

    ``circuit`` names the circuit; ``retry_after`` is the number of seconds
    until it lets a probe through (the gateway sends it as
    ``google.rpc.RetryInfo``). Retriable: a consumer retries an event handler
    that raised it with its backoff rather than dead-lettering the event.

    Example::

        try:
            await mediator.send(GetQuote(symbol="ACME"))
        except CircuitOpen as exc:
            print(exc.circuit, exc.retry_after)     # rates-api 12.5
    """

    default_reason = "CIRCUIT_OPEN"

    def __init__(self, circuit: str, *, retry_after: float) -> None:
        super().__init__(
            f"circuit {circuit!r} is open: its service failed repeatedly; retry later",
            metadata={"circuit": circuit},
        )
        self.circuit = circuit
        self.retry_after = retry_after


class ChainExhausted(WirebusError):
    """Every link of a handler chain passed the request on; none handled it.

    A wiring gap of the service (the gateway answers INTERNAL): give the
    chain a last link that always handles.

    Example::

        router.chain(GetQuote, [from_cache, from_rates_api])   # both may return PASS
    """


class ConsumeError(WirebusError):
    """The broker could not be read from: joining the group, creating topics, fetching.

    ``retriable`` follows the cause (a broker that is still starting: yes).

    Example::

        try:
            await consumer.start()
        except ConsumeError as exc:
            print(exc, exc.retriable)
    """

    code = grpc.StatusCode.UNAVAILABLE
    retriable = True


# ---------------------------------------------------------------- request bounds (issue 12)


class RequestLimitExceeded(ConversionError):
    """A request holds more repeated elements than the gateway's ``RequestLimits`` allow.

    Raised while decoding, before the request is converted; ``field`` is the
    path of the repeated field (``items``, ``values[0].list_value.values``),
    ``limit`` the limit it went over and ``count`` what it held. The gateway
    answers INVALID_ARGUMENT with a ``BadRequest`` naming the field.

    Example::

        try:
            check(request)
        except RequestLimitExceeded as exc:
            print(exc.field, exc.count, exc.limit)   # items 1000000 10000
    """

    def __init__(self, message: str, *, field: str, count: int, limit: int) -> None:
        super().__init__(message)
        self.field = field
        self.count = count
        self.limit = limit

    @property
    def violations(self) -> tuple[FieldViolation, ...]:
        """The one field violation this stands for."""
        return (FieldViolation(self.field, str(self)),)


class DataRejected(InvalidArgument):
    """The database refused a value the request carried (too long, out of range, a NUL byte).

    The unit of work raises it for a database's data error (PostgreSQL's
    SQLSTATE class 22, SQLite's ``OverflowError``): the value came from the
    caller, so it is the caller's error, INVALID_ARGUMENT. The message names
    the database's reason, never the SQL; the cause keeps the driver's error.

    Example::

        try:
            await mediator.send(PlaceOrder(customer_id="x" * 300, items=items))
        except DataRejected as exc:
            print(exc.reason, exc.message)   # DATA_REJECTED the database rejected ...
    """

    default_reason = "DATA_REJECTED"
