"""Test-only protobuf classes for field shapes the shop protos do not have.

The file ``wirebus/testing/v1/kinds.proto`` (package ``wirebus.testing.v1``)
is built here as a ``FileDescriptorProto``, added to the default descriptor
pool once and its classes are made with ``message_factory.GetMessageClass``.
In proto syntax it reads::

    enum Color { COLOR_UNSPECIFIED = 0; COLOR_RED = 1; COLOR_GREEN = 2; COLOR_BLUE = 3; }

    message Point { int32 x = 1; int32 y = 2; }
    message Scalars {
      string text = 1; bytes blob = 2; bool flag = 3; double ratio = 4; float small = 5;
      int32 i32 = 6; int64 i64 = 7; uint32 u32 = 8; uint64 u64 = 9; sint64 s64 = 10;
    }
    message Times { google.protobuf.Timestamp at = 1; google.protobuf.Duration took = 2; }
    message Wrappers {
      google.protobuf.StringValue name = 1; google.protobuf.Int64Value count = 2;
      google.protobuf.BoolValue enabled = 3; google.protobuf.DoubleValue ratio = 4;
      google.protobuf.BytesValue blob = 5; google.protobuf.Int32Value small = 6;
      google.protobuf.UInt64Value big = 7; google.protobuf.FloatValue approx = 8;
      google.protobuf.UInt32Value unsigned = 9;
    }
    message Optionals {
      optional string nickname = 1; optional int32 age = 2; optional Color color = 3;
      Point point = 4; string plain = 5; optional google.protobuf.Timestamp seen_at = 6;
    }
    message Collections {
      repeated string tags = 1; repeated Point points = 2; map<string, int64> counts = 3;
      map<string, Point> places = 4; repeated Color colors = 5; map<int32, string> names = 6;
      repeated google.protobuf.Timestamp times = 7; map<string, Color> palette = 8;
      map<string, string> labels = 9;
    }
    message Identified { string id = 1; string amount = 2; }
    message Painted { Color color = 1; }
    message Shape { string name = 1; Point origin = 2; repeated Point path = 3; }
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,  # noqa: F401 - registers google/protobuf/duration.proto in the pool
    message_factory,
    timestamp_pb2,  # noqa: F401 - registers google/protobuf/timestamp.proto in the pool
    wrappers_pb2,  # noqa: F401 - registers google/protobuf/wrappers.proto in the pool
)
from google.protobuf.descriptor import FileDescriptor, ServiceDescriptor
from google.protobuf.message import Message

PACKAGE = "wirebus.testing.v1"
FILE_NAME = "wirebus/testing/v1/kinds.proto"

_F = descriptor_pb2.FieldDescriptorProto
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED


def _field(
    msg: descriptor_pb2.DescriptorProto,
    name: str,
    number: int,
    type_: int,
    type_name: str = "",
    *,
    repeated: bool = False,
    proto3_optional: bool = False,
) -> None:
    fd = msg.field.add(
        name=name, number=number, type=type_, label=_REPEATED if repeated else _OPTIONAL
    )
    if type_name:
        fd.type_name = type_name
    if proto3_optional:
        # proto3 `optional` is a synthetic oneof named "_<field>" holding only this field.
        fd.proto3_optional = True
        fd.oneof_index = len(msg.oneof_decl)
        msg.oneof_decl.add(name=f"_{name}")


def _map(
    msg: descriptor_pb2.DescriptorProto,
    name: str,
    number: int,
    key_type: int,
    value_type: int,
    value_type_name: str = "",
) -> None:
    entry_name = "".join(part.capitalize() for part in name.split("_")) + "Entry"
    entry = msg.nested_type.add(name=entry_name)
    entry.options.map_entry = True
    _field(entry, "key", 1, key_type)
    _field(entry, "value", 2, value_type, value_type_name)
    _field(msg, name, number, _F.TYPE_MESSAGE, f".{PACKAGE}.{msg.name}.{entry_name}", repeated=True)


def _build() -> descriptor_pb2.FileDescriptorProto:
    f = descriptor_pb2.FileDescriptorProto(name=FILE_NAME, package=PACKAGE, syntax="proto3")
    f.dependency.extend(
        [
            "google/protobuf/timestamp.proto",
            "google/protobuf/duration.proto",
            "google/protobuf/wrappers.proto",
        ]
    )
    color = f.enum_type.add(name="Color")
    for number, value in enumerate(["UNSPECIFIED", "RED", "GREEN", "BLUE"]):
        color.value.add(name=f"COLOR_{value}", number=number)

    point_t, color_t = f".{PACKAGE}.Point", f".{PACKAGE}.Color"
    ts_t, dur_t = ".google.protobuf.Timestamp", ".google.protobuf.Duration"

    point = f.message_type.add(name="Point")
    _field(point, "x", 1, _F.TYPE_INT32)
    _field(point, "y", 2, _F.TYPE_INT32)

    scalars = f.message_type.add(name="Scalars")
    for number, (name, type_) in enumerate(
        [
            ("text", _F.TYPE_STRING),
            ("blob", _F.TYPE_BYTES),
            ("flag", _F.TYPE_BOOL),
            ("ratio", _F.TYPE_DOUBLE),
            ("small", _F.TYPE_FLOAT),
            ("i32", _F.TYPE_INT32),
            ("i64", _F.TYPE_INT64),
            ("u32", _F.TYPE_UINT32),
            ("u64", _F.TYPE_UINT64),
            ("s64", _F.TYPE_SINT64),
        ],
        start=1,
    ):
        _field(scalars, name, number, type_)

    times = f.message_type.add(name="Times")
    _field(times, "at", 1, _F.TYPE_MESSAGE, ts_t)
    _field(times, "took", 2, _F.TYPE_MESSAGE, dur_t)

    wrappers = f.message_type.add(name="Wrappers")
    for number, (name, wrapper) in enumerate(
        [
            ("name", "StringValue"),
            ("count", "Int64Value"),
            ("enabled", "BoolValue"),
            ("ratio", "DoubleValue"),
            ("blob", "BytesValue"),
            ("small", "Int32Value"),
            ("big", "UInt64Value"),
            ("approx", "FloatValue"),
            ("unsigned", "UInt32Value"),
        ],
        start=1,
    ):
        _field(wrappers, name, number, _F.TYPE_MESSAGE, f".google.protobuf.{wrapper}")

    optionals = f.message_type.add(name="Optionals")
    _field(optionals, "nickname", 1, _F.TYPE_STRING, proto3_optional=True)
    _field(optionals, "age", 2, _F.TYPE_INT32, proto3_optional=True)
    _field(optionals, "color", 3, _F.TYPE_ENUM, color_t, proto3_optional=True)
    _field(optionals, "point", 4, _F.TYPE_MESSAGE, point_t)
    _field(optionals, "plain", 5, _F.TYPE_STRING)
    _field(optionals, "seen_at", 6, _F.TYPE_MESSAGE, ts_t)

    collections = f.message_type.add(name="Collections")
    _field(collections, "tags", 1, _F.TYPE_STRING, repeated=True)
    _field(collections, "points", 2, _F.TYPE_MESSAGE, point_t, repeated=True)
    _map(collections, "counts", 3, _F.TYPE_STRING, _F.TYPE_INT64)
    _map(collections, "places", 4, _F.TYPE_STRING, _F.TYPE_MESSAGE, point_t)
    _field(collections, "colors", 5, _F.TYPE_ENUM, color_t, repeated=True)
    _map(collections, "names", 6, _F.TYPE_INT32, _F.TYPE_STRING)
    _field(collections, "times", 7, _F.TYPE_MESSAGE, ts_t, repeated=True)
    _map(collections, "palette", 8, _F.TYPE_STRING, _F.TYPE_ENUM, color_t)
    _map(collections, "labels", 9, _F.TYPE_STRING, _F.TYPE_STRING)

    identified = f.message_type.add(name="Identified")
    _field(identified, "id", 1, _F.TYPE_STRING)
    _field(identified, "amount", 2, _F.TYPE_STRING)

    painted = f.message_type.add(name="Painted")
    _field(painted, "color", 1, _F.TYPE_ENUM, color_t)

    shape = f.message_type.add(name="Shape")
    _field(shape, "name", 1, _F.TYPE_STRING)
    _field(shape, "origin", 2, _F.TYPE_MESSAGE, point_t)
    _field(shape, "path", 3, _F.TYPE_MESSAGE, point_t, repeated=True)
    return f


def _file_descriptor() -> FileDescriptor:
    pool = descriptor_pool.Default()
    try:  # already added (the module may be imported under two names)
        return pool.FindFileByName(FILE_NAME)
    except KeyError:
        return pool.AddSerializedFile(_build().SerializeToString())


_FILE = _file_descriptor()


def _cls(name: str) -> type[Message]:
    return message_factory.GetMessageClass(_FILE.message_types_by_name[name])


COLOR = _FILE.enum_types_by_name["Color"]
Point = _cls("Point")
Scalars = _cls("Scalars")
Times = _cls("Times")
Wrappers = _cls("Wrappers")
Optionals = _cls("Optionals")
Collections = _cls("Collections")
Identified = _cls("Identified")
Painted = _cls("Painted")
Shape = _cls("Shape")


def shop_service(
    file_name: str, service: str, methods: Sequence[tuple[str, str, str, bool, bool]]
) -> ServiceDescriptor:
    """A test service over the shop's messages, added to the default pool once.

    ``file_name`` ``wirebus/testing/<x>.proto`` gives the package
    ``wirebus.testing.<x>``; each method is ``(name, input, output,
    client_streaming, server_streaming)`` with message names of
    ``shop.orders.v1``.

    Example::

        lookup = shop_service("wirebus/testing/lookup.proto", "Lookup",
                              [("Get", "GetOrderRequest", "Order", False, False)])
    """
    from shop.orders.v1 import orders_pb2  # noqa: F401 - registers orders.proto in the pool

    pool = descriptor_pool.Default()
    with contextlib.suppress(KeyError):
        return pool.FindFileByName(file_name).services_by_name[service]
    package = file_name.removesuffix(".proto").replace("/", ".")
    file = descriptor_pb2.FileDescriptorProto(
        name=file_name, package=package, syntax="proto3",
        dependency=["shop/orders/v1/orders.proto"],
    )  # fmt: skip
    added = file.service.add(name=service)
    for name, input_type, output_type, client_streaming, server_streaming in methods:
        added.method.add(
            name=name, input_type=f".shop.orders.v1.{input_type}",
            output_type=f".shop.orders.v1.{output_type}",
            client_streaming=client_streaming, server_streaming=server_streaming,
        )  # fmt: skip
    return pool.Add(file).services_by_name[service]
