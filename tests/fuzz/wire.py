"""Hypothesis strategies for what an outsider can put on the wire as a protobuf message.

``message_bytes(descriptor)`` draws, for any message type (discovered from
its descriptor, nothing hard-coded):

- random bytes,
- valid encodings of random messages (every scalar type at its extremes,
  strings with NUL and non-ASCII text, nested and repeated fields),
- those encodings mutated at the wire level: a byte flipped, truncated,
  extended with garbage, a field's wire type changed, a length prefix made
  huge, unknown fields added,
- deeply nested length-delimited fields and groups (past the decoder's
  recursion limit).

Also :func:`settings_for`, the hypothesis settings of a fuzz target: the
``--fuzz-examples`` count, no deadline, derandomized for CI; a longer run is
random and keeps what it finds in ``.cache/hypothesis``.

Example::

    @given(message_bytes(orders_pb2.PlaceOrderRequest.DESCRIPTOR))
    def test_x(data: bytes) -> None: ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

ROOT = Path(__file__).resolve().parents[2]
CI_EXAMPLES = 300
"""``--fuzz-examples`` at or below this run derandomized (reproducible CI)."""

_VARINT, _I64, _LEN, _SGROUP, _EGROUP, _I32 = 0, 1, 2, 3, 4, 5

INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
UINT32 = st.integers(0, 2**32 - 1)
UINT64 = st.integers(0, 2**64 - 1)
TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "\x00", "a\x00b", "é", "\U0001f600", " ", "x" * 300]),
)

_SCALARS: dict[int, st.SearchStrategy[Any]] = {
    FieldDescriptor.TYPE_INT32: INT32,
    FieldDescriptor.TYPE_SINT32: INT32,
    FieldDescriptor.TYPE_SFIXED32: INT32,
    FieldDescriptor.TYPE_INT64: INT64,
    FieldDescriptor.TYPE_SINT64: INT64,
    FieldDescriptor.TYPE_SFIXED64: INT64,
    FieldDescriptor.TYPE_UINT32: UINT32,
    FieldDescriptor.TYPE_FIXED32: UINT32,
    FieldDescriptor.TYPE_UINT64: UINT64,
    FieldDescriptor.TYPE_FIXED64: UINT64,
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_FLOAT: st.floats(width=32),
    FieldDescriptor.TYPE_DOUBLE: st.floats(),
    FieldDescriptor.TYPE_STRING: TEXT,
    FieldDescriptor.TYPE_BYTES: st.binary(max_size=40),
    FieldDescriptor.TYPE_ENUM: st.one_of(st.integers(0, 4), INT32),  # open enums: any int32
}


def settings_for(examples: int) -> settings:
    """The hypothesis settings of one fuzz target run with ``examples`` examples."""
    reproducible = examples <= CI_EXAMPLES
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=reproducible,
        database=None
        if reproducible
        else DirectoryBasedExampleDatabase(str(ROOT / ".cache" / "hypothesis")),
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )


# ---------------------------------------------------------------- the wire format


def varint(value: int) -> bytes:
    """``value`` as a protobuf varint (negative numbers as their 64-bit two's complement)."""
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint((number << 3) | wire_type)


def length_delimited(number: int, payload: bytes) -> bytes:
    return tag(number, _LEN) + varint(len(payload)) + payload


def deep(levels: int, number: int = 1, groups: bool = False) -> bytes:
    """``levels`` fields nested in one another (length-delimited, or start/end groups)."""
    if groups:
        return tag(number, _SGROUP) * levels + tag(number, _EGROUP) * levels
    payload = b""
    for _ in range(levels):
        payload = length_delimited(number, payload)
    return payload


# ---------------------------------------------------------------- valid messages


def messages(descriptor: Descriptor, depth: int = 3) -> st.SearchStrategy[Any]:
    """Random instances of the message type of ``descriptor`` (nested up to ``depth``)."""
    cls = message_factory.GetMessageClass(descriptor)
    fields = {f.name: _field(f, depth) for f in descriptor.fields if _field(f, depth) is not None}

    def build(values: dict[str, Any]) -> Any:
        message = cls()
        for name, value in values.items():
            field = descriptor.fields_by_name[name]
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                if _is_repeated(field):
                    for item in value:
                        getattr(message, name).add().CopyFrom(item)
                else:
                    getattr(message, name).CopyFrom(value)
            elif _is_repeated(field):
                getattr(message, name).extend(value)
            else:
                setattr(message, name, value)
        return message

    return st.fixed_dictionaries({}, optional=fields).map(build)  # type: ignore[arg-type]


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def _field(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any] | None:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if depth <= 0 or field.message_type.GetOptions().map_entry:
            return None
        single = messages(field.message_type, depth - 1)
    elif field.type == FieldDescriptor.TYPE_GROUP:
        return None
    else:
        single = _SCALARS[field.type]
    return st.lists(single, max_size=4) if _is_repeated(field) else single


# ---------------------------------------------------------------- mutations


@st.composite
def _mutated(draw: st.DrawFn, valid: bytes) -> bytes:
    data = bytearray(valid)
    kind = draw(
        st.sampled_from(
            ["flip", "truncate", "extend", "unknown", "wire_type", "huge_length", "splice"]
        )
    )
    if kind == "flip" and data:
        at = draw(st.integers(0, len(data) - 1))
        data[at] ^= draw(st.integers(1, 255))
    elif kind == "truncate" and data:
        del data[draw(st.integers(0, len(data) - 1)) :]
    elif kind == "extend":
        data += draw(st.binary(min_size=1, max_size=16))
    elif kind == "unknown":
        data += draw(_unknown_field())
    elif kind == "wire_type" and data:
        # the first tag's wire type replaced: every other field is left as it was
        data[0] = (data[0] & ~0x07) | draw(st.integers(0, 7))
    elif kind == "huge_length":
        number = draw(st.integers(1, 20))
        size = draw(st.sampled_from([2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**64 - 1]))
        data += tag(number, _LEN) + varint(size) + b"x"
    else:
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(max_size=8))
    return bytes(data)


@st.composite
def _unknown_field(draw: st.DrawFn) -> bytes:
    number = draw(st.integers(1, 2**29 - 1))
    wire_type = draw(st.sampled_from([_VARINT, _I64, _LEN, _I32, _SGROUP]))
    if wire_type == _VARINT:
        return tag(number, wire_type) + varint(draw(UINT64))
    if wire_type == _I64:
        return tag(number, wire_type) + draw(st.binary(min_size=8, max_size=8))
    if wire_type == _I32:
        return tag(number, wire_type) + draw(st.binary(min_size=4, max_size=4))
    if wire_type == _SGROUP:
        return tag(number, _SGROUP) + tag(number, _EGROUP)
    return length_delimited(number, draw(st.binary(max_size=32)))


def message_bytes(descriptor: Descriptor) -> st.SearchStrategy[bytes]:
    """Bytes an outsider might send as a ``descriptor`` message (see the module docstring)."""
    valid = messages(descriptor).map(lambda m: m.SerializeToString())
    nesting = st.builds(
        deep,
        st.sampled_from([50, 99, 100, 101, 200, 5000]),
        st.integers(1, 6),
        st.booleans(),
    )
    return st.one_of(
        st.binary(max_size=64),
        valid,
        valid.flatmap(_mutated),
        valid.flatmap(
            lambda v: st.lists(_unknown_field(), max_size=4).map(lambda u: v + b"".join(u))
        ),
        nesting,
    )
