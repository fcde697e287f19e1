"""CloudEvents binary content mode: attributes to Kafka headers and back."""

import datetime as dt
import re
import uuid

import pytest

from wirebus.cloudevents import (
    CONTENT_TYPE,
    SPECVERSION,
    Attributes,
    CloudEventsCodec,
    CloudEventsReader,
    MalformedEvent,
)

TIME = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC)


def attributes(**changes: object) -> Attributes:
    values: dict[str, object] = {
        "id": "8c4a7c1e-2b6f-4a53-9d0e-3c2f1a0b9e77",
        "source": "shop",
        "type": "shop.orders.v1.OrderPlaced",
        "time": TIME,
        "dataschema": "type.googleapis.com/shop.orders.v1.OrderPlaced",
    }
    values.update(changes)
    return Attributes(**values)  # type: ignore[arg-type]


def valid_headers() -> list[tuple[str, bytes]]:
    return attributes().headers()


def without(name: str) -> list[tuple[str, bytes]]:
    return [(k, v) for k, v in valid_headers() if k != name]


def replaced(name: str, value: bytes) -> list[tuple[str, bytes]]:
    return [(k, value if k == name else v) for k, v in valid_headers()]


# ---------------------------------------------------------------- headers()


def test_headers_carry_each_attribute_in_binary_mode() -> None:
    headers = dict(attributes().headers())

    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_id"] == b"8c4a7c1e-2b6f-4a53-9d0e-3c2f1a0b9e77"
    assert headers["ce_source"] == b"shop"
    assert headers["ce_type"] == b"shop.orders.v1.OrderPlaced"
    assert headers["ce_time"] == b"2024-05-06T07:08:09.123456Z"
    assert headers["content-type"] == b"application/protobuf"
    assert headers["ce_dataschema"] == b"type.googleapis.com/shop.orders.v1.OrderPlaced"


def test_headers_are_bytes_and_required_ones_come_first() -> None:
    headers = attributes().headers()

    assert all(isinstance(v, bytes) for _, v in headers)
    assert [k for k, _ in headers[:6]] == [
        "ce_specversion",
        "ce_id",
        "ce_source",
        "ce_type",
        "ce_time",
        "content-type",
    ]


def test_ce_time_is_rfc3339_in_utc_with_z() -> None:
    plus_two = dt.timezone(dt.timedelta(hours=2))
    headers = dict(attributes(time=dt.datetime(2024, 5, 6, 9, 8, 9, tzinfo=plus_two)).headers())

    assert headers["ce_time"] == b"2024-05-06T07:08:09.000000Z"
    assert re.fullmatch(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", headers["ce_time"])


def test_ce_subject_is_sent_only_when_set() -> None:
    assert "ce_subject" not in dict(attributes().headers())
    assert dict(attributes(subject="orders/o-1").headers())["ce_subject"] == b"orders/o-1"


def test_optional_headers_are_left_out_when_unset() -> None:
    names = {k for k, _ in attributes(dataschema=None).headers()}
    assert names == {
        "ce_specversion",
        "ce_id",
        "ce_source",
        "ce_type",
        "ce_time",
        "content-type",
    }


def test_trace_context_travels_as_w3c_headers() -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    headers = dict(attributes(traceparent=traceparent, tracestate="vendor=1").headers())

    assert headers["traceparent"] == traceparent.encode()
    assert headers["tracestate"] == b"vendor=1"


def test_new_attributes_have_a_fresh_uuid_and_the_current_utc_time() -> None:
    before = dt.datetime.now(dt.UTC)
    first = Attributes.new(source="shop", type="a.B")
    second = Attributes.new(source="shop", type="a.B", subject="s")
    after = dt.datetime.now(dt.UTC)

    assert first.id != second.id
    assert uuid.UUID(first.id).version == 4
    assert before <= first.time <= after
    assert first.time.utcoffset() == dt.timedelta(0)
    assert second.subject == "s"


def test_constants_match_the_spec() -> None:
    assert SPECVERSION == "1.0"
    assert CONTENT_TYPE == "application/protobuf"


# ---------------------------------------------------------------- from_headers()


def test_from_headers_round_trips_every_attribute() -> None:
    original = attributes(
        subject="orders/o-1",
        traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        tracestate="vendor=1",
    )
    assert Attributes.from_headers(original.headers()) == original


def test_from_headers_round_trips_minimal_attributes() -> None:
    original = attributes(dataschema=None)
    parsed = Attributes.from_headers(original.headers())

    assert parsed == original
    assert parsed.subject is None
    assert parsed.traceparent is None


def test_from_headers_ignores_unknown_headers_and_none_values() -> None:
    headers = [*valid_headers(), ("x-custom", b"anything"), ("ce_subject", None)]
    parsed = Attributes.from_headers(headers)  # type: ignore[arg-type]

    assert parsed == attributes()


def test_from_headers_accepts_a_content_type_with_parameters_or_the_x_alias() -> None:
    with_params = replaced("content-type", b"application/protobuf; proto=shop.orders.v1")
    alias = replaced("content-type", b"application/x-protobuf")

    assert Attributes.from_headers(with_params).id == attributes().id
    assert Attributes.from_headers(alias).id == attributes().id


def test_from_headers_keeps_the_first_of_repeated_headers() -> None:
    headers = [*valid_headers(), ("ce_id", b"second")]
    assert Attributes.from_headers(headers).id == attributes().id


def test_from_headers_keeps_the_time_zone_of_ce_time() -> None:
    parsed = Attributes.from_headers(replaced("ce_time", b"2024-05-06T09:08:09+02:00"))
    assert parsed.time == dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)


# ---------------------------------------------------------------- malformed


@pytest.mark.parametrize("name", ["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time"])
def test_a_missing_required_header_is_malformed_and_named(name: str) -> None:
    with pytest.raises(MalformedEvent, match=f"missing CloudEvents header.*{name}"):
        Attributes.from_headers(without(name))


@pytest.mark.parametrize("name", ["ce_id", "ce_source", "ce_type", "ce_time"])
def test_an_empty_required_header_counts_as_missing(name: str) -> None:
    with pytest.raises(MalformedEvent, match=f"missing CloudEvents header.*{name}"):
        Attributes.from_headers(replaced(name, b""))


def test_every_missing_header_is_listed_at_once() -> None:
    with pytest.raises(MalformedEvent) as info:
        Attributes.from_headers([("content-type", b"application/protobuf")])

    for name in ("ce_specversion", "ce_id", "ce_source", "ce_type"):
        assert name in str(info.value)


def test_no_headers_at_all_is_malformed() -> None:
    with pytest.raises(MalformedEvent, match="missing CloudEvents header"):
        Attributes.from_headers([])


def test_another_specversion_is_malformed() -> None:
    with pytest.raises(MalformedEvent, match=r"unsupported ce_specversion '0\.3'"):
        Attributes.from_headers(replaced("ce_specversion", b"0.3"))


@pytest.mark.parametrize("raw", [b"yesterday", b"2024-13-01T00:00:00Z", b"1714979289"])
def test_a_ce_time_that_is_not_rfc3339_is_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedEvent, match=r"ce_time .* is not RFC 3339"):
        Attributes.from_headers(replaced("ce_time", raw))


def test_a_naive_ce_time_is_malformed() -> None:
    with pytest.raises(MalformedEvent, match="ce_time '2024-05-06T07:08:09' has no time zone"):
        Attributes.from_headers(replaced("ce_time", b"2024-05-06T07:08:09"))


@pytest.mark.parametrize(
    "content_type", [b"application/json", b"text/plain", b"application/cloudevents+json"]
)
def test_another_content_type_is_malformed(content_type: bytes) -> None:
    with pytest.raises(MalformedEvent, match=r"content-type .* is not application/protobuf"):
        Attributes.from_headers(replaced("content-type", content_type))


@pytest.mark.parametrize("name", ["ce_id", "ce_type", "ce_time"])
def test_a_header_that_is_not_utf8_is_malformed_and_named(name: str) -> None:
    with pytest.raises(MalformedEvent, match=f"header {name} is not UTF-8"):
        Attributes.from_headers(replaced(name, b"\xff\xfe"))


def test_malformed_event_is_a_wirebus_error() -> None:
    from wirebus import WirebusError

    assert issubclass(MalformedEvent, WirebusError)


def test_a_lower_case_z_in_ce_time_is_utc() -> None:
    parsed = Attributes.from_headers(replaced("ce_time", b"2024-05-06T07:08:09z"))
    assert parsed.time == dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)


def test_a_binary_header_that_is_not_an_attribute_does_not_make_the_event_malformed() -> None:
    headers = [*valid_headers(), ("x-binary-span", b"\x00\xff\xfe\x01")]
    assert Attributes.from_headers(headers) == attributes()


def test_the_fast_reader_and_the_general_one_agree() -> None:
    from hypothesis import given
    from hypothesis import strategies as st

    text = st.text(min_size=1, max_size=20).filter(lambda s: "\x00" not in s)

    @given(
        ident=text,
        source=text,
        kind=text,
        seconds=st.integers(0, 4_000_000_000),
        schema=st.none() | text,
        subject=st.none() | text,
    )
    def agree(ident, source, kind, seconds, schema, subject) -> None:  # type: ignore[no-untyped-def]
        original = Attributes(
            id=ident,
            source=source,
            type=kind,
            time=dt.datetime.fromtimestamp(seconds, dt.UTC),
            dataschema=schema,
            subject=subject,
        )
        headers = original.headers()
        assert Attributes.from_headers(headers) == original
        assert reader.read(headers) == original
        assert reader.read(headers) == original  # the second time from its caches
        assert CloudEventsReader.read_general(headers) == original

    reader = CloudEventsReader()
    agree()


def test_a_repeated_header_is_read_by_the_general_reader_first_value_winning() -> None:
    headers = [*valid_headers(), ("ce_id", b"second")]
    assert Attributes.from_headers(headers).id == attributes().id


def test_a_cached_time_does_not_hide_a_malformed_one() -> None:
    reader = CloudEventsReader()
    reader.read(valid_headers())  # caches this ce_time
    with pytest.raises(MalformedEvent, match="ce_time"):
        reader.read(replaced("ce_time", b"yesterday"))
    assert reader.read(valid_headers()).time == TIME


def test_a_readers_cached_text_does_not_leak_into_another_reader() -> None:
    first, second = CloudEventsReader(), CloudEventsReader()
    first.read(replaced("ce_source", b"billing"))

    assert second.read(valid_headers()).source == "shop"
    assert first.read(valid_headers()).source == "shop"


@pytest.mark.parametrize("cache", [True, False])
def test_a_reader_with_or_without_caches_reads_every_malformed_case_like_the_general_one(
    cache: bool,
) -> None:
    reader = CloudEventsReader(cache=cache)
    broken = [
        without("ce_id"),
        replaced("ce_specversion", b"0.3"),
        replaced("ce_time", b"yesterday"),
        replaced("ce_type", b"\xff\xfe"),
        replaced("content-type", b"application/json"),
    ]
    for headers in broken:
        with pytest.raises(MalformedEvent) as general:
            CloudEventsReader.read_general(headers)
        with pytest.raises(MalformedEvent) as read:
            reader.read(headers)
        assert str(read.value) == str(general.value)


# ---------------------------------------------------------------- read_route (the consumer's)


@pytest.mark.parametrize("cache", [True, False])
def test_read_route_gives_the_id_and_type_that_read_gives(cache: bool) -> None:
    reader = CloudEventsReader(cache=cache)
    for headers in (
        valid_headers(),
        without("content-type"),
        without("ce_dataschema"),
        attributes(subject="orders/o-1").headers(),
        [*valid_headers(), ("ce_id", b"second")],  # repeated: the first value wins
        replaced("content-type", b"application/protobuf; proto=shop"),
        [*valid_headers(), ("x-binary-span", b"\x00\xff")],
        [*valid_headers(), ("x-empty", None)],  # a header without a value is left out
    ):
        read = reader.read(headers)
        assert reader.read_route(headers) == (read.id, read.type)
        assert reader.read_route(tuple(headers)) == (read.id, read.type)  # twice: cached


@pytest.mark.parametrize("cache", [True, False])
def test_read_route_refuses_every_malformed_case_with_the_general_readers_reason(
    cache: bool,
) -> None:
    reader = CloudEventsReader(cache=cache)
    reader.read_route(valid_headers())  # its values are now known good
    broken = [
        without("ce_id"),
        without("ce_source"),
        replaced("ce_specversion", b"0.3"),
        replaced("ce_time", b"yesterday"),
        replaced("ce_id", b"\xff\xfe"),
        replaced("ce_type", b"\xff\xfe"),
        replaced("ce_source", b"\xff\xfe"),
        replaced("ce_dataschema", b"\xff\xfe"),
        [(k, v) for k, v in replaced("ce_dataschema", b"\xff") if k != "content-type"],
        [*valid_headers(), ("ce_subject", b"\xff\xfe")],
        [*valid_headers(), ("traceparent", b"\xff\xfe")],
        replaced("content-type", b"application/json"),
    ]
    for headers in broken:
        with pytest.raises(MalformedEvent) as general:
            CloudEventsReader.read_general(headers)
        with pytest.raises(MalformedEvent) as route:
            reader.read_route(headers)
        assert str(route.value) == str(general.value)


def test_read_route_checks_a_new_time_after_a_good_one() -> None:
    reader = CloudEventsReader()
    reader.read_route(valid_headers())
    with pytest.raises(MalformedEvent, match="ce_time"):
        reader.read_route(replaced("ce_time", b"2024-05-06T07:08:09"))  # no time zone
    assert reader.read_route(valid_headers()) == (attributes().id, attributes().type)


# ---------------------------------------------------------------- the codec's writer


def order_cancelled_type():  # type: ignore[no-untyped-def]
    from examples.shop.orders.messages import OrderCancelled
    from wirebus.codec import EventRegistry

    return EventRegistry().add(OrderCancelled)


def test_the_writer_writes_every_attribute_in_its_fixed_order() -> None:
    writer = CloudEventsCodec(source="shop").writer
    kind = order_cancelled_type()

    headers = writer.headers(kind, event_id=attributes().id, time=b"2024-05-06T07:08:09.123456Z")

    name = "shop.orders.v1.OrderCancelled"
    assert headers == (
        ("ce_specversion", b"1.0"),
        ("ce_id", attributes().id.encode()),
        ("ce_time", b"2024-05-06T07:08:09.123456Z"),
        ("ce_source", b"shop"),
        ("ce_type", name.encode()),
        ("content-type", b"application/protobuf"),
        ("ce_dataschema", f"type.googleapis.com/{name}".encode()),
    )
    assert Attributes.from_headers(headers) == attributes(
        type=name, dataschema=f"type.googleapis.com/{name}"
    )


def test_the_writer_gives_each_event_a_new_id_and_adds_a_subject_when_given() -> None:
    codec = CloudEventsCodec(source="shop")
    kind = order_cancelled_type()

    first = dict(codec.writer.headers(kind))
    second = dict(codec.writer.headers(kind, subject="orders/o-1"))

    assert first["ce_id"] != second["ce_id"]
    assert uuid.UUID(first["ce_id"].decode()).version == 4
    assert "ce_subject" not in first
    assert second["ce_subject"] == b"orders/o-1"
    assert codec.reader.read(tuple(second.items())).subject == "orders/o-1"


def test_two_codecs_write_their_own_source_for_the_same_type() -> None:
    kind = order_cancelled_type()
    shop, billing = CloudEventsCodec(source="shop"), CloudEventsCodec(source="billing")

    assert dict(shop.writer.headers(kind))["ce_source"] == b"shop"
    assert dict(billing.writer.headers(kind))["ce_source"] == b"billing"


def test_a_codec_needs_a_source() -> None:
    from wirebus import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"source= .* must not be empty"):
        CloudEventsCodec(source="")
