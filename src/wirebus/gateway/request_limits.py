"""Request limits: how many repeated elements one decoded request may hold.

A 2 MB request can hold a million empty sub-messages; converting and
validating them costs hundreds of times the request's size in memory and
seconds of the event loop. The gateway checks the decoded message before
it converts it: each repeated (or map) field's ``len()``, recursively, with
no element visited unless its type can itself hold repeated fields, and
every field counted against one total, so the check costs at most
``max_elements`` steps and usually a handful of ``len()`` calls.

The plan of each request type is built once at start-up; a type that cannot
hold a repeated field gets no check at all.

Example::

    limits = RequestLimits(max_repeated=1_000)
    check = limits.checker(orders_pb2.PlaceOrderRequest.DESCRIPTOR)
    check(request)        # raises RequestLimitExceeded naming the field
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from operator import attrgetter
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message as ProtoMessage

from ..errors import ConfigurationError, RequestLimitExceeded, WirebusError

__all__ = ["RequestLimits"]

Check = Callable[[ProtoMessage], None]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RequestLimits:
    """Bounds on one request's repeated fields, checked before conversion.

    ``max_repeated`` bounds the elements of any one repeated or map field;
    ``max_elements`` bounds them all together, across nested messages.
    A request over either is INVALID_ARGUMENT (``RequestLimitExceeded``).

    Example::

        GatewayConfig(limits=RequestLimits(max_repeated=50_000, max_elements=200_000))
    """

    max_repeated: int = 10_000
    max_elements: int = 100_000

    def __post_init__(self) -> None:
        if self.max_repeated < 1:
            raise ConfigurationError(f"max_repeated must be positive, not {self.max_repeated}")
        if self.max_elements < self.max_repeated:
            raise ConfigurationError(
                f"max_elements ({self.max_elements}) must be at least"
                f" max_repeated ({self.max_repeated})"
            )

    def checker(self, descriptor: Descriptor) -> Check | None:
        """The check of messages of ``descriptor``; ``None`` if it holds no repeated field."""
        plans: dict[str, _Plan] = {}
        plan = _plan_of(descriptor, plans, _holding_repeated(descriptor))
        if not plan.fields:
            return None
        return _Walker(self).check_with(plan)


# ---------------------------------------------------------------- plans (start-up)


@dataclasses.dataclass(slots=True)
class _Field:
    """One field to look at: its getter, and how to visit its elements (``None``: don't)."""

    name: str
    get: Callable[[Any], Any]
    many: bool  # repeated or map: counted
    is_map: bool
    inner: _Plan | None  # the plan of its message (elements, map values, or the message)


@dataclasses.dataclass(slots=True)
class _Plan:
    fields: list[_Field]


def _holding_repeated(root: Descriptor) -> set[str]:
    """Full names of the message types reachable from ``root`` that can hold a repeated field."""
    edges: dict[str, set[str]] = {}
    direct: set[str] = set()
    todo, seen = [root], {root.full_name}
    while todo:
        d = todo.pop()
        edges[d.full_name] = set()
        for fd in d.fields:
            if fd.is_repeated:
                direct.add(d.full_name)
            target = _message_of(fd)
            if target is not None:
                edges[d.full_name].add(target.full_name)
                if target.full_name not in seen:
                    seen.add(target.full_name)
                    todo.append(target)
    holding = set(direct)
    changed = True
    while changed:  # a fixed point: recursive types included
        changed = False
        for name, targets in edges.items():
            if name not in holding and targets & holding:
                holding.add(name)
                changed = True
    return holding


def _message_of(fd: FieldDescriptor) -> Descriptor | None:
    """The message type whose values the field holds (a map's value type for a map)."""
    md = fd.message_type
    if md is not None and md.GetOptions().map_entry:
        return md.fields_by_name["value"].message_type
    return md


def _plan_of(d: Descriptor, plans: dict[str, _Plan], holding: set[str]) -> _Plan:
    known = plans.get(d.full_name)
    if known is not None:
        return known
    plan = plans[d.full_name] = _Plan([])  # before the fields: a recursive type finds it
    for fd in d.fields:
        target = _message_of(fd)
        inner = (
            _plan_of(target, plans, holding)
            if target is not None and target.full_name in holding
            else None
        )
        is_map = fd.message_type is not None and fd.message_type.GetOptions().map_entry
        if fd.is_repeated or inner is not None:
            plan.fields.append(_Field(fd.name, attrgetter(fd.name), fd.is_repeated, is_map, inner))
    return plan


# ---------------------------------------------------------------- the walk (per request)


class _Over(WirebusError):
    """Raised inside the walk; the path is put together on the way out (no per-element strings)."""

    def __init__(self, name: str, count: int, limit: int, what: str) -> None:
        self.parts = [name]
        self.count, self.limit, self.what = count, limit, what

    def error(self) -> RequestLimitExceeded:
        field = "".join(reversed(self.parts))
        message = (
            f"{field}: the request holds {self.count} {self.what}, more than the limit of"
            f" {self.limit}"
        )
        return RequestLimitExceeded(message, field=field, count=self.count, limit=self.limit)


class _Walker:
    """Walks one message along its plan, counting elements against the limits."""

    def __init__(self, limits: RequestLimits) -> None:
        self.max_repeated = limits.max_repeated
        self.max_elements = limits.max_elements

    def check_with(self, plan: _Plan) -> Check:
        flat = [f.get for f in plan.fields if f.many and f.inner is None]
        if len(flat) == len(plan.fields):
            return self._flat_check(plan, flat)
        walk = self._walk

        def check(message: ProtoMessage) -> None:
            try:
                walk(message, plan, 0)
            except _Over as over:
                raise over.error() from None

        return check

    def _flat_check(self, plan: _Plan, getters: list[Callable[[Any], Any]]) -> Check:
        """Only repeated fields of scalars or flat messages: ``len()`` of each, no visit."""
        max_repeated, max_elements, walk = self.max_repeated, self.max_elements, self._walk

        def check(message: ProtoMessage) -> None:
            total = 0
            for get in getters:
                n = len(get(message))
                total += n
                if n > max_repeated or total > max_elements:
                    try:
                        walk(message, plan, 0)  # the walk names the field
                    except _Over as over:
                        raise over.error() from None

        return check

    def _walk(self, message: Any, plan: _Plan, total: int) -> int:
        for f in plan.fields:
            value = f.get(message)
            if not f.many:  # a singular message field that may hold repeated fields
                if f.inner is not None and message.HasField(f.name):
                    try:
                        total = self._walk(value, f.inner, total)
                    except _Over as over:
                        over.parts.append(f.name + ".")
                        raise
                continue
            n = len(value)
            if n > self.max_repeated:
                raise _Over(f.name, n, self.max_repeated, "elements")
            total += n
            if total > self.max_elements:
                raise _Over(f.name, total, self.max_elements, "elements in all")
            if f.inner is not None:
                total = self._visit(f, value, total)
        return total

    def _visit(self, f: _Field, value: Any, total: int) -> int:
        """The elements (or map values) of one field, each walked along ``f.inner``."""
        inner = f.inner
        assert inner is not None
        items = value.items() if f.is_map else enumerate(value)
        for key, item in items:
            try:
                total = self._walk(item, inner, total)
            except _Over as over:
                over.parts.append(f"{f.name}[{key!r:.64}]." if f.is_map else f"{f.name}[{key}].")
                raise
        return total
