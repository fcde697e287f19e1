"""Compile a dataclass <-> protobuf converter once per class.

The converter matches dataclass fields to proto fields by name, checks every
pair when the class is defined and then writes two specialised functions as
Python source (the way ``dataclasses`` writes ``__init__``): per call there is
no reflection, no type dispatch and no generic walk, only the attribute reads,
the constructor call and the conversions the field types need.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import types
import typing
import uuid
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message as ProtoMessage

from .errors import ConversionError, ConversionSchemaError

__all__ = ["Converter", "compile_converter"]

ToProto = Callable[[Any], ProtoMessage]
FromProto = Callable[[ProtoMessage], Any]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_UTC = dt.UTC

_FD = FieldDescriptor
_INT_TYPES = {
    _FD.TYPE_INT32,
    _FD.TYPE_INT64,
    _FD.TYPE_UINT32,
    _FD.TYPE_UINT64,
    _FD.TYPE_SINT32,
    _FD.TYPE_SINT64,
    _FD.TYPE_FIXED32,
    _FD.TYPE_FIXED64,
    _FD.TYPE_SFIXED32,
    _FD.TYPE_SFIXED64,
}
_SCALARS: dict[type, set[int]] = {
    str: {_FD.TYPE_STRING},
    bytes: {_FD.TYPE_BYTES},
    bool: {_FD.TYPE_BOOL},
    int: _INT_TYPES,
    float: {_FD.TYPE_DOUBLE, _FD.TYPE_FLOAT},
}
_WRAPPERS = {
    "google.protobuf.StringValue": str,
    "google.protobuf.BytesValue": bytes,
    "google.protobuf.BoolValue": bool,
    "google.protobuf.Int32Value": int,
    "google.protobuf.Int64Value": int,
    "google.protobuf.UInt32Value": int,
    "google.protobuf.UInt64Value": int,
    "google.protobuf.DoubleValue": float,
    "google.protobuf.FloatValue": float,
}


@dataclasses.dataclass(frozen=True, slots=True)
class Converter:
    """The two compiled functions of one dataclass/proto pair."""

    to_proto: ToProto
    from_proto: FromProto


# ---------------------------------------------------------------- run-time helpers
# These are bound into the generated code's namespace; each raises a
# ConversionError naming the field, so a bad value says where it was.


def _timestamp_parts(value: dt.datetime, where: str) -> tuple[int, int]:
    if value.tzinfo is None:
        raise ConversionError(f"{where}: naive datetime {value!r}; use a timezone-aware UTC value")
    delta = value - _EPOCH
    seconds = delta.days * 86400 + delta.seconds
    return seconds, delta.microseconds * 1000


def _uuid(value: str, where: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ConversionError(f"{where}: {value!r} is not a UUID") from None


def _decimal(value: str, where: str) -> Decimal:
    try:
        return Decimal(value)
    except InvalidOperation:
        raise ConversionError(f"{where}: {value!r} is not a decimal number") from None


# ---------------------------------------------------------------- compile time


@dataclasses.dataclass(frozen=True, slots=True)
class _FieldCode:
    """One field's code: ``from_lines`` (statements) run before ``from_expr``."""

    to_expr: str
    from_expr: str
    from_lines: tuple[str, ...] = ()


class _Compiler:
    """Builds source for one class; helpers go into ``ns`` under unique names."""

    def __init__(self, owner: type) -> None:
        self.owner = owner
        self.ns: dict[str, Any] = {
            "_ConversionError": ConversionError,
            "_EPOCH": _EPOCH,
            "_TD": dt.timedelta,
        }
        self._n = 0

    def bind(self, value: Any) -> str:
        self._n += 1
        name = f"_h{self._n}"
        self.ns[name] = value
        return name

    def fail(self, where: str, why: str) -> ConversionSchemaError:
        return ConversionSchemaError(f"{where}: {why}")

    # -- one value (not a container) -----------------------------------------

    def value(self, tp: Any, fd: FieldDescriptor, where: str) -> tuple[str, str]:
        """Return ``(to, from)`` templates with ``{}`` for the source expression."""
        if fd.message_type is not None:
            return self._message_value(tp, fd.message_type, where)
        if fd.enum_type is not None:
            return self._enum_value(tp, fd.enum_type, where)
        return self._scalar_value(tp, fd.type, where)

    def _scalar_value(self, tp: Any, proto_type: int, where: str) -> tuple[str, str]:
        if tp in _SCALARS and proto_type in _SCALARS[tp]:
            return "{}", "{}"
        if tp is uuid.UUID and proto_type == _FD.TYPE_STRING:
            return "str({})", f"{self.bind(_uuid)}({{}}, {where!r})"
        if tp is Decimal and proto_type == _FD.TYPE_STRING:
            return "str({})", f"{self.bind(_decimal)}({{}}, {where!r})"
        raise self.fail(
            where, f"type {_name(tp)} cannot map to proto type {_proto_type(proto_type)}"
        )

    def _enum_value(self, tp: Any, ed: EnumDescriptor, where: str) -> tuple[str, str]:
        if not (isinstance(tp, type) and issubclass(tp, enum.Enum)):
            raise self.fail(where, f"proto enum {ed.full_name} needs an Enum type, not {_name(tp)}")
        prefix = _upper_snake(ed.name) + "_"
        by_name: dict[str, int] = {}
        for v in ed.values:
            by_name[v.name] = v.number
            if v.name.startswith(prefix):
                by_name.setdefault(v.name[len(prefix) :], v.number)
        to_number: dict[Any, int] = {}
        for member in tp:
            if member.name not in by_name:
                raise self.fail(
                    where, f"{tp.__name__}.{member.name} has no value in {ed.full_name}"
                )
            to_number[member] = by_name[member.name]
        from_number = {number: member for member, number in to_number.items()}

        def enum_from(number: int) -> Any:
            try:
                return from_number[number]
            except KeyError:
                raise ConversionError(
                    f"{where}: {ed.full_name} value {number} has no {tp.__name__} member"
                ) from None

        return f"{self.bind(to_number)}[{{}}]", f"{self.bind(enum_from)}({{}})"

    def _message_value(self, tp: Any, md: Descriptor, where: str) -> tuple[str, str]:
        cls = _proto_class(md)
        name = md.full_name
        if name == "google.protobuf.Timestamp" and tp is dt.datetime:
            ts_cls = cls

            def ts_to(v: dt.datetime) -> Any:
                seconds, nanos = _timestamp_parts(v, where)
                return ts_cls(seconds=seconds, nanos=nanos)

            return f"{self.bind(ts_to)}({{}})", _TIMESTAMP_FROM
        if name == "google.protobuf.Duration" and tp is dt.timedelta:
            d_cls = cls

            def dur_to(v: dt.timedelta) -> Any:
                seconds = v.days * 86400 + v.seconds
                nanos = v.microseconds * 1000
                if seconds < 0 < nanos:  # protobuf wants seconds and nanos of one sign
                    seconds, nanos = seconds + 1, nanos - 1_000_000_000
                return d_cls(seconds=seconds, nanos=nanos)

            return f"{self.bind(dur_to)}({{}})", _DURATION_FROM
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            conv = converter_for(tp, cls)
            return f"{self.bind(conv.to_proto)}({{}})", f"{self.bind(conv.from_proto)}({{}})"
        if tp is cls:
            return "{}", "{}"
        raise self.fail(where, f"type {_name(tp)} cannot map to message {name}")

    # -- one field ------------------------------------------------------------

    def field(self, f: dataclasses.Field[Any], hint: Any, fd: FieldDescriptor) -> _FieldCode:
        """Return the code of one dataclass field, both ways."""
        where = f"{self.owner.__qualname__}.{f.name}"
        src_to, src_from = f"self.{f.name}", f"m.{fd.name}"
        inner, optional = _unwrap_optional(hint)
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            return _FieldCode(*self._map(inner, fd, where, src_to, src_from))
        if fd.is_repeated:
            return self._repeated(inner, fd, where, src_to, src_from)
        if optional:
            return _FieldCode(*self._optional(inner, fd, where, src_to, src_from))
        to_t, from_t = self.value(inner, fd, where)
        return _FieldCode(to_t.format(src_to), from_t.format(src_from))

    def _optional(
        self, tp: Any, fd: FieldDescriptor, where: str, src_to: str, src_from: str
    ) -> tuple[str, str]:
        if fd.message_type is not None and fd.message_type.full_name in _WRAPPERS:
            expected = _WRAPPERS[fd.message_type.full_name]
            if tp is not expected:
                raise self.fail(
                    where, f"{fd.message_type.full_name} maps to {expected.__name__} | None"
                )
            w = self.bind(_proto_class(fd.message_type))
            to = f"None if {src_to} is None else {w}(value={src_to})"
            return to, f"{src_from}.value if m.HasField({fd.name!r}) else None"
        if not fd.has_presence:
            raise self.fail(
                where,
                f"is Optional but proto field {fd.name} has no presence; declare it `optional`",
            )
        to_t, from_t = self.value(tp, fd, where)
        to = src_to if to_t == "{}" else f"None if {src_to} is None else {to_t.format(src_to)}"
        return to, f"{from_t.format(src_from)} if m.HasField({fd.name!r}) else None"

    def _repeated(
        self, hint: Any, fd: FieldDescriptor, where: str, src_to: str, src_from: str
    ) -> _FieldCode:
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        homogeneous_tuple = origin is tuple and len(args) == 2 and args[1] is Ellipsis
        if homogeneous_tuple or (origin in (list, Sequence) and len(args) == 1):
            item = args[0]
        else:
            raise self.fail(
                where, f"repeated field {fd.name} needs tuple[T, ...], not {_name(hint)}"
            )
        to_t, from_t = self.value(item, fd, f"{where}[]")
        to = src_to if to_t == "{}" else f"[{to_t.format('_v')} for _v in {src_to}]"
        make = "list" if origin is list else "tuple"
        if from_t == "{}":
            return _FieldCode(to, f"{make}({src_from})")
        # A for statement, not a comprehension: on Python 3.11 a comprehension
        # is a function call of its own, which costs more than one item.
        self._n += 1
        acc = f"_r{self._n}"
        lines = (
            f"    {acc} = []",
            f"    for _v in {src_from}:",
            f"        {acc}.append({from_t.format('_v')})",
        )
        return _FieldCode(to, acc if make == "list" else f"tuple({acc})", lines)

    def _map(
        self, hint: Any, fd: FieldDescriptor, where: str, src_to: str, src_from: str
    ) -> tuple[str, str]:
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin not in (dict, Mapping) or len(args) != 2:
            raise self.fail(where, f"map field {fd.name} needs dict[K, V], not {_name(hint)}")
        entry = fd.message_type
        assert entry is not None  # map fields always have an entry type
        k_to, k_from = self.value(args[0], entry.fields_by_name["key"], f"{where}[key]")
        v_to, v_from = self.value(args[1], entry.fields_by_name["value"], f"{where}[value]")
        if k_to == v_to == "{}":
            return src_to, f"dict({src_from})"
        to = f"{{{k_to.format('_k')}: {v_to.format('_v')} for _k, _v in {src_to}.items()}}"
        frm = f"{{{k_from.format('_k')}: {v_from.format('_v')} for _k, _v in {src_from}.items()}}"
        return to, frm


# Timestamp and Duration are read inline, with timedelta's positional
# arguments (days, seconds, microseconds): a helper call and keyword arguments
# cost twice as much. ``_t`` is a local of the generated function.
_TIMESTAMP_FROM = "_EPOCH + _TD(0, (_t := {}).seconds, _t.nanos // 1000)"
_DURATION_FROM = "_TD(0, (_t := {}).seconds, _t.nanos // 1000)"


# ---------------------------------------------------------------- entry points


def converter_for(cls: type, proto_cls: type[ProtoMessage]) -> Converter:
    """The converter of a nested dataclass: its own binding if it has one.

    An unbound dataclass is compiled for each class that nests it (at class
    definition, not per message): no module-level cache keeps classes alive.
    """
    bound = getattr(cls, "__wirebus_converter__", None)
    if isinstance(bound, Converter):
        if getattr(cls, "__wirebus_proto__", None) is not proto_cls:
            raise ConversionSchemaError(
                f"{cls.__qualname__} is bound to {_name(cls.__wirebus_proto__)},"  # type: ignore[attr-defined]
                f" not {proto_cls.DESCRIPTOR.full_name}"
            )
        return bound
    return compile_converter(cls, proto_cls)


def compile_converter(
    cls: type, proto_cls: type[ProtoMessage], *, localns: dict[str, Any] | None = None
) -> Converter:
    """Check ``cls`` against ``proto_cls`` and compile its two functions.

    Raises :class:`ConversionSchemaError` naming the class and field when a
    dataclass field has no proto field of that name or its type cannot map.
    """
    descriptor = proto_cls.DESCRIPTOR
    try:
        hints = typing.get_type_hints(cls, localns=localns)
    except NameError as exc:
        raise ConversionSchemaError(
            f"{cls.__qualname__}: cannot resolve a field annotation ({exc});"
            " define nested types before the class that uses them"
        ) from None
    c = _Compiler(cls)
    to_parts: list[str] = []
    codes: dict[str, _FieldCode] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        fd = typing.cast("FieldDescriptor | None", descriptor.fields_by_name.get(f.name))
        if fd is None:
            raise c.fail(
                f"{cls.__qualname__}.{f.name}", f"no field {f.name!r} in {descriptor.full_name}"
            )
        codes[f.name] = code = c.field(f, hints[f.name], fd)
        to_parts.append(f"{fd.name}={code.to_expr}")
    c.ns["_P"], c.ns["_C"] = proto_cls, cls
    qual = cls.__qualname__
    build = _from_proto_body(cls, codes, c.ns)
    source = "\n".join(
        [
            "def to_proto(self):",
            "    try:",
            f"        return _P({', '.join(to_parts)})",
            "    except (TypeError, ValueError, KeyError, AttributeError) as exc:",
            f"        raise _ConversionError({qual + '.proto(): '!r} + repr(exc)) from exc",
            "def from_proto(m):",
            *build,
        ]
    )
    exec(compile(source, f"<wirebus converter {qual}>", "exec"), c.ns)
    return Converter(to_proto=c.ns["to_proto"], from_proto=c.ns["from_proto"])


def _from_proto_body(cls: type, codes: dict[str, _FieldCode], ns: dict[str, Any]) -> list[str]:
    """The body of ``from_proto``: every field is read in field order."""
    setters = _slot_setters(cls)
    if setters is None:
        body: list[str] = []
        for name, code in codes.items():
            body += [*code.from_lines, f"    _a_{name} = {code.from_expr}"]
        return [*body, f"    return _C({', '.join(f'{n}=_a_{n}' for n in codes)})"]
    # fill the slots directly: a frozen dataclass's __init__ costs ~3x more
    ns["_new"] = object.__new__
    body = ["    o = _new(_C)"]
    for name, code in codes.items():
        ns[f"_set_{name}"] = setters[name]
        body += [*code.from_lines, f"    _set_{name}(o, {code.from_expr})"]
    return [*body, "    return o"]


# ---------------------------------------------------------------- small helpers


def _slot_setters(cls: type) -> dict[str, Callable[[Any, Any], None]] | None:
    """Per field, the slot's setter, when building ``cls`` may skip ``__init__``.

    Only for a slotted dataclass whose ``__init__`` is the generated one, with
    every field in ``__init__`` and no ``__post_init__``: then ``__init__``
    does nothing but store the arguments, which the slot setters do for less.
    """
    init = getattr(cls, "__init__", None)
    code = getattr(init, "__code__", None)
    if (
        code is None
        or code.co_filename != "<string>"  # written by dataclasses, not by the user
        or hasattr(cls, "__post_init__")
        or not dataclasses.is_dataclass(cls)
    ):
        return None
    setters: dict[str, Callable[[Any, Any], None]] = {}
    for f in dataclasses.fields(cls):
        slot = cls.__dict__.get(f.name)
        if not f.init or not isinstance(slot, types.MemberDescriptorType):
            return None
        setters[f.name] = slot.__set__
    return setters


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0], True
    return hint, False


def _proto_class(md: Descriptor) -> type[ProtoMessage]:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(md)


def _upper_snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(ch.upper())
    return "".join(out)


def _name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__ if tp.__module__ == "builtins" else f"{tp.__module__}.{tp.__qualname__}"
    return repr(tp)


def _proto_type(t: int) -> str:
    for name in dir(_FD):
        if name.startswith("TYPE_") and getattr(_FD, name) == t:
            return name[5:].lower()
    return str(t)
