"""The compiled dataclass <-> protobuf converter, one field shape at a time.

Uses the test-only protos of ``_protos.py`` for the shapes the shop protos do
not have. Classes are defined at module level where several tests share
them, and inside ``pytest.raises`` where defining the class is the test.
(No ``from __future__ import annotations`` here: classes defined inside a
test must resolve their annotations eagerly.)
"""

import dataclasses
import datetime as dt
import enum
import gc
import types
import uuid
import weakref
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit import _protos as pb
from wirebus import ConfigurationError, ConversionError, ConversionSchemaError, Message

UTC = dt.UTC


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"


def color_number(name: str) -> int:
    return pb.COLOR.values_by_name[f"COLOR_{name}"].number


class PointMsg(Message, proto=pb.Point):
    x: int
    y: int


@dataclasses.dataclass(frozen=True)
class PlainPoint:
    """A plain dataclass: never bound, compiled against the field's message type."""

    x: int
    y: int


# ---------------------------------------------------------------- scalars


class AllScalars(Message, proto=pb.Scalars):
    text: str
    blob: bytes
    flag: bool
    ratio: float
    small: float
    i32: int
    i64: int
    u32: int
    u64: int
    s64: int


SCALARS = AllScalars(
    text="héllo ✓",
    blob=b"\x00\xff",
    flag=True,
    ratio=3.25,
    small=0.5,
    i32=-(2**31),
    i64=2**63 - 1,
    u32=2**32 - 1,
    u64=2**64 - 1,
    s64=-(2**63),
)


def test_scalar_fields_are_copied_to_the_proto_field_of_the_same_name() -> None:
    m = SCALARS.proto()

    assert isinstance(m, pb.Scalars)
    assert (m.text, m.blob, m.flag, m.ratio, m.small) == ("héllo ✓", b"\x00\xff", True, 3.25, 0.5)
    assert (m.i32, m.i64, m.u32, m.u64, m.s64) == (
        -(2**31),
        2**63 - 1,
        2**32 - 1,
        2**64 - 1,
        -(2**63),
    )


def test_scalar_fields_are_read_back_from_the_proto_field_of_the_same_name() -> None:
    m = pb.Scalars(
        text="t", blob=b"b", flag=True, ratio=1.5, small=2.0, i32=1, i64=2, u32=3, u64=4, s64=-5
    )

    assert AllScalars.from_proto(m) == AllScalars(
        text="t", blob=b"b", flag=True, ratio=1.5, small=2.0, i32=1, i64=2, u32=3, u64=4, s64=-5
    )


def test_scalars_round_trip_through_bytes_at_their_range_limits() -> None:
    data = SCALARS.proto().SerializeToString()

    assert AllScalars.from_proto(pb.Scalars.FromString(data)) == SCALARS


def test_a_dataclass_may_map_a_subset_of_the_proto_fields() -> None:
    class OnlyText(Message, proto=pb.Scalars):
        text: str

    assert OnlyText.from_proto(pb.Scalars(text="a", i32=7)) == OnlyText(text="a")
    assert OnlyText(text="a").proto() == pb.Scalars(text="a")


def test_an_int_outside_the_proto_range_is_a_conversion_error_naming_the_class() -> None:
    with pytest.raises(ConversionError, match=r"PointMsg\.proto\(\)"):
        PointMsg(x=2**40, y=0).proto()


def test_a_value_of_the_wrong_type_at_run_time_is_a_conversion_error() -> None:
    with pytest.raises(ConversionError, match=r"PointMsg\.proto\(\)"):
        PointMsg(x="not a number", y=0).proto()  # type: ignore[arg-type]


# ---------------------------------------------------------------- Timestamp and Duration


class Timed(Message, proto=pb.Times):
    at: dt.datetime
    took: dt.timedelta


def test_an_aware_datetime_becomes_a_timestamp_with_seconds_and_nanos() -> None:
    at = dt.datetime(2024, 5, 17, 12, 30, 15, 123456, tzinfo=UTC)

    m = Timed(at=at, took=dt.timedelta()).proto()

    assert m.at.seconds == int((at - dt.datetime(1970, 1, 1, tzinfo=UTC)).total_seconds())
    assert m.at.nanos == 123_456_000
    assert m.at.ToDatetime(tzinfo=UTC) == at


def test_a_timestamp_becomes_a_utc_aware_datetime() -> None:
    m = pb.Times()
    m.at.FromDatetime(dt.datetime(2001, 2, 3, 4, 5, 6, 7, tzinfo=UTC))

    at = Timed.from_proto(m).at

    assert at == dt.datetime(2001, 2, 3, 4, 5, 6, 7, tzinfo=UTC)
    assert at.utcoffset() == dt.timedelta(0)


def test_a_datetime_in_another_timezone_keeps_its_instant() -> None:
    cet = dt.timezone(dt.timedelta(hours=2))
    at = dt.datetime(2024, 1, 1, 2, 0, tzinfo=cet)

    back = Timed.from_proto(Timed(at=at, took=dt.timedelta()).proto()).at

    assert back == at
    assert back == dt.datetime(2024, 1, 1, 0, 0, tzinfo=UTC)


def test_a_naive_datetime_is_a_conversion_error_naming_class_and_field() -> None:
    with pytest.raises(ConversionError, match=r"Timed\.at: naive datetime"):
        Timed(at=dt.datetime(2024, 1, 1), took=dt.timedelta()).proto()


@pytest.mark.parametrize(
    "at",
    [
        dt.datetime(1, 1, 1, tzinfo=UTC),
        dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        dt.datetime(1970, 1, 1, tzinfo=UTC),
        dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ],
)
def test_timestamps_round_trip_with_microsecond_precision_at_the_edges(at: dt.datetime) -> None:
    data = Timed(at=at, took=dt.timedelta()).proto().SerializeToString()

    assert Timed.from_proto(pb.Times.FromString(data)).at == at


def test_a_negative_timedelta_becomes_a_duration_with_seconds_and_nanos_of_one_sign() -> None:
    took = -dt.timedelta(seconds=1, microseconds=500_000)

    m = Timed(at=dt.datetime.now(UTC), took=took).proto()

    assert (m.took.seconds, m.took.nanos) == (-1, -500_000_000)
    assert m.took.ToTimedelta() == took


def test_a_duration_becomes_a_timedelta() -> None:
    m = pb.Times()
    m.took.FromTimedelta(dt.timedelta(days=2, microseconds=3))

    assert Timed.from_proto(m).took == dt.timedelta(days=2, microseconds=3)


@settings(max_examples=200, deadline=None)
@given(
    at=st.datetimes(
        min_value=dt.datetime(1, 1, 1),
        max_value=dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
        timezones=st.just(UTC),
    ),
    took=st.timedeltas(
        min_value=dt.timedelta(days=-3_000_000), max_value=dt.timedelta(days=3_000_000)
    ),
)
def test_datetimes_and_timedeltas_round_trip_through_bytes(
    at: dt.datetime, took: dt.timedelta
) -> None:
    value = Timed(at=at, took=took)

    assert Timed.from_proto(pb.Times.FromString(value.proto().SerializeToString())) == value


# ---------------------------------------------------------------- wrapper types


class Wrapped(Message, proto=pb.Wrappers):
    name: str | None = None
    count: int | None = None
    enabled: bool | None = None
    ratio: float | None = None
    blob: bytes | None = None
    small: int | None = None
    big: int | None = None
    approx: float | None = None
    unsigned: int | None = None


def test_none_leaves_a_wrapper_field_unset_and_an_unset_wrapper_reads_as_none() -> None:
    m = Wrapped().proto()

    assert not any(m.HasField(f) for f in ("name", "count", "enabled", "ratio", "blob", "small"))
    assert Wrapped.from_proto(m) == Wrapped()


def test_wrapper_fields_carry_their_value() -> None:
    value = Wrapped(
        name="n",
        count=-(2**63),
        enabled=True,
        ratio=0.1,
        blob=b"x",
        small=7,
        big=2**64 - 1,
        approx=0.25,
        unsigned=2**32 - 1,
    )

    m = value.proto()

    assert (m.name.value, m.count.value, m.big.value) == ("n", -(2**63), 2**64 - 1)
    assert Wrapped.from_proto(pb.Wrappers.FromString(m.SerializeToString())) == value


def test_wrapper_fields_tell_a_zero_value_from_none() -> None:
    value = Wrapped(name="", count=0, enabled=False, ratio=0.0, blob=b"")

    m = value.proto()

    assert [m.HasField(f) for f in ("name", "count", "enabled", "ratio", "blob")] == [True] * 5
    assert Wrapped.from_proto(m) == value


def test_a_wrapper_mapped_to_the_wrong_python_type_is_a_schema_error() -> None:
    with pytest.raises(
        ConversionSchemaError,
        match=r"BadWrapper\.count: google\.protobuf\.Int64Value maps to int \| None",
    ):

        class BadWrapper(Message, proto=pb.Wrappers):
            count: str | None = None


def test_a_wrapper_field_needs_an_optional_annotation() -> None:
    with pytest.raises(
        ConversionSchemaError,
        match=r"NotOptional\.name: type str cannot map to message google\.protobuf\.StringValue",
    ):

        class NotOptional(Message, proto=pb.Wrappers):
            name: str


# ------------------------------------------------ proto3 optional and message presence


class Opt(Message, proto=pb.Optionals):
    nickname: str | None = None
    age: int | None = None
    color: Color | None = None
    point: PointMsg | None = None
    plain: str = ""
    seen_at: dt.datetime | None = None


def test_none_leaves_a_proto3_optional_field_without_presence() -> None:
    m = Opt().proto()

    assert not any(m.HasField(f) for f in ("nickname", "age", "color", "point", "seen_at"))
    assert Opt.from_proto(m) == Opt()


def test_a_proto3_optional_field_keeps_a_zero_value_distinct_from_none() -> None:
    value = Opt(nickname="", age=0)

    m = value.proto()

    assert [m.HasField("nickname"), m.HasField("age")] == [True, True]
    assert Opt.from_proto(pb.Optionals.FromString(m.SerializeToString())) == value


def test_optional_enum_message_and_timestamp_fields_round_trip_when_set() -> None:
    value = Opt(
        nickname="ann",
        age=41,
        color=Color.BLUE,
        point=PointMsg(x=1, y=2),
        seen_at=dt.datetime(2020, 2, 29, tzinfo=UTC),
    )

    m = value.proto()

    assert m.color == color_number("BLUE")
    assert m.point == pb.Point(x=1, y=2)
    assert Opt.from_proto(m) == value


def test_an_unset_message_field_reads_as_none_for_an_optional_nested_type() -> None:
    assert Opt.from_proto(pb.Optionals(plain="p")).point is None


def test_optional_on_a_field_without_presence_is_a_schema_error() -> None:
    with pytest.raises(
        ConversionSchemaError,
        match=r"NoPresence\.plain: is Optional but proto field plain has no presence",
    ):

        class NoPresence(Message, proto=pb.Optionals):
            plain: str | None = None


# ---------------------------------------------------------------- enums


class Painting(Message, proto=pb.Painted):
    color: Color


def test_an_enum_member_maps_to_the_proto_value_of_the_same_name_without_prefix() -> None:
    assert Painting(color=Color.GREEN).proto().color == color_number("GREEN")
    assert Painting.from_proto(pb.Painted(color=color_number("RED"))) == Painting(color=Color.RED)


def test_enum_members_may_use_the_full_proto_value_name() -> None:
    class FullName(enum.Enum):
        COLOR_RED = 1
        COLOR_BLUE = 2

    class FullNamePainting(Message, proto=pb.Painted):
        color: FullName

    m = FullNamePainting(color=FullName.COLOR_BLUE).proto()

    assert m.color == color_number("BLUE")
    assert FullNamePainting.from_proto(m).color is FullName.COLOR_BLUE


def test_a_proto_enum_number_without_a_python_member_is_a_conversion_error() -> None:
    with pytest.raises(
        ConversionError, match=r"Painting\.color: wirebus\.testing\.v1\.Color value 42"
    ):
        Painting.from_proto(pb.Painted(color=42))


def test_the_unspecified_zero_value_has_no_member_unless_the_enum_declares_one() -> None:
    with pytest.raises(ConversionError, match="value 0 has no Color member"):
        Painting.from_proto(pb.Painted())


def test_an_enum_member_missing_from_the_proto_enum_is_a_schema_error() -> None:
    class Paint(enum.Enum):
        RED = 1
        PURPLE = 2

    with pytest.raises(
        ConversionSchemaError,
        match=r"Purple\.color: Paint\.PURPLE has no value in wirebus\.testing\.v1\.Color",
    ):

        class Purple(Message, proto=pb.Painted):
            color: Paint


def test_a_proto_enum_needs_an_enum_annotation() -> None:
    with pytest.raises(
        ConversionSchemaError,
        match=r"ByNumber\.color: proto enum wirebus\.testing\.v1\.Color needs an Enum type",
    ):

        class ByNumber(Message, proto=pb.Painted):
            color: int


# ---------------------------------------------------------------- repeated and map


class Coll(Message, proto=pb.Collections):
    tags: tuple[str, ...] = ()
    points: tuple[PointMsg, ...] = ()
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    places: dict[str, PointMsg] = dataclasses.field(default_factory=dict)
    colors: tuple[Color, ...] = ()
    names: dict[int, str] = dataclasses.field(default_factory=dict)
    times: tuple[dt.datetime, ...] = ()
    palette: dict[str, Color] = dataclasses.field(default_factory=dict)


FULL_COLL = Coll(
    tags=("a", "b", "a"),
    points=(PointMsg(x=1, y=2), PointMsg(x=-3, y=4)),
    counts={"apples": 3, "pears": -(2**63)},
    places={"home": PointMsg(x=0, y=0), "work": PointMsg(x=5, y=6)},
    colors=(Color.BLUE, Color.RED),
    names={1: "one", -2: "minus two"},
    times=(dt.datetime(2000, 1, 1, tzinfo=UTC), dt.datetime(1900, 6, 1, 0, 0, 0, 1, tzinfo=UTC)),
    palette={"sky": Color.BLUE},
)


def test_repeated_fields_map_to_tuples_in_order() -> None:
    m = FULL_COLL.proto()

    assert list(m.tags) == ["a", "b", "a"]
    assert list(m.points) == [pb.Point(x=1, y=2), pb.Point(x=-3, y=4)]
    assert list(m.colors) == [color_number("BLUE"), color_number("RED")]
    back = Coll.from_proto(m)
    assert back.tags == ("a", "b", "a")
    assert isinstance(back.points, tuple)
    assert isinstance(back.times, tuple)


def test_map_fields_map_to_dicts_including_message_and_enum_values() -> None:
    m = FULL_COLL.proto()

    assert dict(m.counts) == {"apples": 3, "pears": -(2**63)}
    assert m.places["work"] == pb.Point(x=5, y=6)
    assert m.palette["sky"] == color_number("BLUE")
    back = Coll.from_proto(m)
    assert back.places == {"home": PointMsg(x=0, y=0), "work": PointMsg(x=5, y=6)}
    assert back.names == {1: "one", -2: "minus two"}
    assert type(back.counts) is dict


def test_collections_round_trip_through_bytes() -> None:
    data = FULL_COLL.proto().SerializeToString()

    assert Coll.from_proto(pb.Collections.FromString(data)) == FULL_COLL


def test_empty_collections_round_trip() -> None:
    assert Coll.from_proto(Coll().proto()) == Coll()


def test_a_class_with_post_init_is_built_through_init_with_every_field_converted() -> None:
    built: list[object] = []

    class Checked(Message, proto=pb.Collections):
        points: tuple[PointMsg, ...] = ()
        times: tuple[dt.datetime, ...] = ()

        def __post_init__(self) -> None:
            built.append(self)

    back = Checked.from_proto(FULL_COLL.proto())

    assert back.points == FULL_COLL.points
    assert back.times == FULL_COLL.times
    assert built == [back]


def test_a_bad_item_in_a_repeated_field_is_a_conversion_error_naming_the_field() -> None:
    m = pb.Collections(colors=[color_number("RED"), 99])

    with pytest.raises(ConversionError, match=r"Coll\.colors\[\].*99"):
        Coll.from_proto(m)


def test_repeated_fields_may_be_annotated_as_lists() -> None:
    class Listed(Message, proto=pb.Collections):
        tags: list[str]
        points: list[PointMsg]

    back = Listed.from_proto(Listed(tags=["x"], points=[PointMsg(x=1, y=1)]).proto())

    assert back.tags == ["x"]
    assert back.points == [PointMsg(x=1, y=1)]


@pytest.mark.parametrize("annotation", [str, tuple[str, int], set[str]], ids=repr)
def test_a_repeated_field_needs_a_tuple_or_list_annotation(annotation: object) -> None:
    with pytest.raises(
        ConversionSchemaError, match=r"\.tags: repeated field tags needs tuple\[T, \.\.\.\]"
    ):
        types.new_class(
            "Tags",
            (Message,),
            {"proto": pb.Collections},
            lambda ns: ns.update(__annotations__={"tags": annotation}),
        )


def test_a_map_field_needs_a_dict_annotation() -> None:
    with pytest.raises(
        ConversionSchemaError, match=r"Pairs\.counts: map field counts needs dict\[K, V\]"
    ):

        class Pairs(Message, proto=pb.Collections):
            counts: tuple[str, ...]


def test_a_map_value_type_that_cannot_map_is_a_schema_error() -> None:
    with pytest.raises(ConversionSchemaError, match=r"BadCounts\.counts"):

        class BadCounts(Message, proto=pb.Collections):
            counts: dict[str, str]


def test_map_keys_and_values_may_be_uuids_and_decimals() -> None:
    class Labels(Message, proto=pb.Collections):
        labels: dict[uuid.UUID, Decimal]

    key = uuid.UUID(int=1)
    value = Labels(labels={key: Decimal("1.50")})

    assert value.proto().labels == {str(key): "1.50"}
    assert Labels.from_proto(value.proto()) == value


# ---------------------------------------------------------------- uuid and Decimal as strings


class Ident(Message, proto=pb.Identified):
    id: uuid.UUID
    amount: Decimal


def test_uuid_and_decimal_travel_as_strings() -> None:
    value = Ident(id=uuid.UUID("12345678-1234-5678-1234-567812345678"), amount=Decimal("10.50"))

    m = value.proto()

    assert (m.id, m.amount) == ("12345678-1234-5678-1234-567812345678", "10.50")
    back = Ident.from_proto(m)
    assert back == value
    assert str(back.amount) == "10.50"  # trailing zero (precision) preserved


@pytest.mark.parametrize(
    ("id_", "amount", "where"),
    [
        ("not-a-uuid", "1", r"Ident\.id: 'not-a-uuid' is not a UUID"),
        (str(uuid.UUID(int=0)), "one", r"Ident\.amount: 'one' is not a decimal number"),
        ("", "1", r"Ident\.id: '' is not a UUID"),
    ],
)
def test_a_malformed_uuid_or_decimal_string_is_a_conversion_error(
    id_: str, amount: str, where: str
) -> None:
    with pytest.raises(ConversionError, match=where):
        Ident.from_proto(pb.Identified(id=id_, amount=amount))


@settings(max_examples=200, deadline=None)
@given(
    id_=st.uuids(),
    amount=st.decimals(allow_nan=False, allow_infinity=False),
)
def test_uuids_and_finite_decimals_round_trip_through_bytes(
    id_: uuid.UUID, amount: Decimal
) -> None:
    value = Ident(id=id_, amount=amount)

    back = Ident.from_proto(pb.Identified.FromString(value.proto().SerializeToString()))

    assert back == value
    assert str(back.amount) == str(amount)


# ---------------------------------------------------------------- nested messages


class ShapeMsg(Message, proto=pb.Shape):
    name: str
    origin: PointMsg
    path: tuple[PointMsg, ...] = ()


class PlainShape(Message, proto=pb.Shape):
    name: str
    origin: PlainPoint
    path: tuple[PlainPoint, ...] = ()


class RawShape(Message, proto=pb.Shape):
    name: str
    origin: pb.Point  # type: ignore[valid-type]


def test_a_nested_bound_message_converts_with_its_own_binding() -> None:
    value = ShapeMsg(name="tri", origin=PointMsg(x=1, y=2), path=(PointMsg(x=3, y=4),))

    m = value.proto()

    assert m.origin == pb.Point(x=1, y=2)
    assert list(m.path) == [pb.Point(x=3, y=4)]
    assert ShapeMsg.from_proto(m) == value


def test_a_plain_unbound_dataclass_is_compiled_against_the_fields_message_type() -> None:
    value = PlainShape(name="sq", origin=PlainPoint(x=1, y=2), path=(PlainPoint(x=5, y=6),))

    m = value.proto()

    assert m.origin == pb.Point(x=1, y=2)
    back = PlainShape.from_proto(pb.Shape.FromString(m.SerializeToString()))
    assert back == value
    assert type(back.origin) is PlainPoint


def test_classes_defined_in_a_function_are_not_kept_alive_by_the_converter() -> None:
    def define() -> "weakref.ref[type]":
        @dataclasses.dataclass(frozen=True)
        class LocalPoint:
            x: int
            y: int

        class LocalShape(Message, proto=pb.Shape):
            name: str
            origin: LocalPoint

        assert LocalShape(name="s", origin=LocalPoint(x=1, y=2)).proto().origin.x == 1
        return weakref.ref(LocalPoint)

    point_class = define()
    gc.collect()

    assert point_class() is None  # no module-level cache of nested converters


def test_a_generated_message_class_as_field_type_passes_through_unchanged() -> None:
    value = RawShape(name="raw", origin=pb.Point(x=9, y=8))

    assert value.proto().origin == pb.Point(x=9, y=8)
    assert RawShape.from_proto(value.proto()).origin == pb.Point(x=9, y=8)


def test_an_unset_nested_message_reads_as_its_default() -> None:
    assert ShapeMsg.from_proto(pb.Shape(name="n")).origin == PointMsg(x=0, y=0)


def test_a_nested_message_bound_to_another_proto_is_a_schema_error() -> None:
    with pytest.raises(
        ConversionSchemaError,
        match=r"AllScalars is bound to .*Scalars.*, not wirebus\.testing\.v1\.Point",
    ):

        class Mismatch(Message, proto=pb.Shape):
            origin: AllScalars


def test_a_plain_nested_dataclass_with_an_unknown_field_is_a_schema_error() -> None:
    @dataclasses.dataclass
    class Point3:
        x: int
        z: int

    with pytest.raises(
        ConversionSchemaError, match=r"Point3\.z: no field 'z' in wirebus\.testing\.v1\.Point"
    ):

        class Shape3(Message, proto=pb.Shape):
            origin: Point3


def test_a_non_dataclass_type_for_a_message_field_is_a_schema_error() -> None:
    with pytest.raises(
        ConversionSchemaError,
        match=r"Stringly\.origin: type str cannot map to message wirebus\.testing\.v1\.Point",
    ):

        class Stringly(Message, proto=pb.Shape):
            origin: str


# ---------------------------------------------------------------- definition-time errors


def test_a_field_without_a_proto_field_of_its_name_is_a_schema_error_naming_it() -> None:
    with pytest.raises(
        ConversionSchemaError, match=r"Typo\.z: no field 'z' in wirebus\.testing\.v1\.Point"
    ):

        class Typo(Message, proto=pb.Point):
            x: int
            z: int


def test_a_python_type_that_cannot_map_to_the_proto_scalar_is_a_schema_error() -> None:
    with pytest.raises(
        ConversionSchemaError, match=r"IntText\.text: type int cannot map to proto type string"
    ):

        class IntText(Message, proto=pb.Scalars):
            text: int


def test_bool_and_float_do_not_stand_in_for_each_other() -> None:
    with pytest.raises(
        ConversionSchemaError, match=r"FloatFlag\.flag: type float cannot map to proto type bool"
    ):

        class FloatFlag(Message, proto=pb.Scalars):
            flag: float


def test_an_unresolvable_annotation_is_a_schema_error() -> None:
    with pytest.raises(ConversionSchemaError, match=r"Forward: cannot resolve a field annotation"):

        class Forward(Message, proto=pb.Shape):
            origin: "DefinedLater"  # type: ignore[name-defined]  # noqa: F821


def test_schema_errors_are_configuration_errors() -> None:
    assert issubclass(ConversionSchemaError, ConfigurationError)


# ---------------------------------------------------------------- hand-written conversions


class Scaled(Message, proto=pb.Point):
    """Stores tenths; writes both conversions by hand."""

    x: int
    y: int

    def proto(self) -> pb.Point:  # type: ignore[valid-type]
        return pb.Point(x=self.x * 10, y=self.y * 10)

    @classmethod
    def from_proto(cls, message: pb.Point) -> "Scaled":  # type: ignore[valid-type]
        return cls(x=message.x // 10, y=message.y // 10)


def test_hand_written_proto_and_from_proto_are_kept() -> None:
    assert Scaled(x=1, y=2).proto() == pb.Point(x=10, y=20)
    assert Scaled.from_proto(pb.Point(x=30, y=40)) == Scaled(x=3, y=4)


def test_a_class_writing_both_conversions_by_hand_is_not_checked_against_the_proto() -> None:
    class Renamed(Message, proto=pb.Point):
        left: int

        def proto(self) -> pb.Point:  # type: ignore[valid-type]
            return pb.Point(x=self.left)

        @classmethod
        def from_proto(cls, message: pb.Point) -> "Renamed":  # type: ignore[valid-type]
            return cls(left=message.x)

    assert Renamed.from_proto(Renamed(left=4).proto()) == Renamed(left=4)


def test_a_hand_written_proto_keeps_the_compiled_from_proto() -> None:
    class HalfHand(Message, proto=pb.Point):
        x: int
        y: int

        def proto(self) -> pb.Point:  # type: ignore[valid-type]
            return pb.Point(x=-self.x, y=-self.y)

    assert HalfHand(x=1, y=2).proto() == pb.Point(x=-1, y=-2)
    assert HalfHand.from_proto(pb.Point(x=1, y=2)) == HalfHand(x=1, y=2)


def test_a_hand_written_from_proto_keeps_the_compiled_proto() -> None:
    class HalfHand(Message, proto=pb.Point):
        x: int
        y: int

        @classmethod
        def from_proto(cls, message: pb.Point) -> "HalfHand":  # type: ignore[valid-type]
            return cls(x=message.y, y=message.x)

    assert HalfHand(x=1, y=2).proto() == pb.Point(x=1, y=2)
    assert HalfHand.from_proto(pb.Point(x=1, y=2)) == HalfHand(x=2, y=1)


def test_a_nested_message_with_hand_written_conversions_uses_them() -> None:
    class ScaledShape(Message, proto=pb.Shape):
        name: str
        origin: Scaled

    m = ScaledShape(name="s", origin=Scaled(x=1, y=2)).proto()

    assert m.origin == pb.Point(x=10, y=20)
    assert ScaledShape.from_proto(m).origin == Scaled(x=1, y=2)


def test_a_hand_written_message_whose_fields_differ_from_the_proto_can_be_nested() -> None:
    class Corner(Message, proto=pb.Point):
        left: int

        def proto(self) -> pb.Point:  # type: ignore[valid-type]
            return pb.Point(x=self.left)

        @classmethod
        def from_proto(cls, message: pb.Point) -> "Corner":  # type: ignore[valid-type]
            return cls(left=message.x)

    class Cornered(Message, proto=pb.Shape):
        origin: Corner

    assert Cornered.from_proto(Cornered(origin=Corner(left=3)).proto()) == Cornered(
        origin=Corner(left=3)
    )
