"""The Connect and gRPC-Web wire formats: codes, HTTP statuses, envelopes, timeouts, CORS."""

from __future__ import annotations

import grpc
import pytest

from tests.unit._connect import request
from wirebus.connect import ConnectConfig, ConnectServer, Cors
from wirebus.connect.errors import grpc_web_trailers
from wirebus.connect.protocol import (
    code_name,
    connect_timeout,
    envelope,
    grpc_timeout,
    http_status,
    next_frame,
)
from wirebus.errors import ConfigurationError, NotFound
from wirebus.gateway.errors import status_for


@pytest.mark.parametrize(
    ("code", "name", "status"),
    [
        (grpc.StatusCode.CANCELLED, "canceled", 499),
        (grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument", 400),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "deadline_exceeded", 504),
        (grpc.StatusCode.NOT_FOUND, "not_found", 404),
        (grpc.StatusCode.ALREADY_EXISTS, "already_exists", 409),
        (grpc.StatusCode.PERMISSION_DENIED, "permission_denied", 403),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "resource_exhausted", 429),
        (grpc.StatusCode.FAILED_PRECONDITION, "failed_precondition", 400),
        (grpc.StatusCode.ABORTED, "aborted", 409),
        (grpc.StatusCode.OUT_OF_RANGE, "out_of_range", 400),
        (grpc.StatusCode.UNIMPLEMENTED, "unimplemented", 501),
        (grpc.StatusCode.INTERNAL, "internal", 500),
        (grpc.StatusCode.UNAVAILABLE, "unavailable", 503),
        (grpc.StatusCode.DATA_LOSS, "data_loss", 500),
        (grpc.StatusCode.UNAUTHENTICATED, "unauthenticated", 401),
        (grpc.StatusCode.UNKNOWN, "unknown", 500),
    ],
)
def test_each_code_has_the_connect_specs_name_and_http_status(code, name, status):
    assert (code_name(code), http_status(code)) == (name, status)


def test_an_envelope_round_trips_and_a_partial_one_is_not_a_frame():
    frame = envelope(b"abc", 0x02)
    assert frame == b"\x02\x00\x00\x00\x03abc"
    assert next_frame(frame + b"rest") == (0x02, b"abc", b"rest")
    assert next_frame(frame[:6]) is None


def test_timeouts_are_read_in_seconds_and_bad_ones_refused():
    assert connect_timeout(b"1500") == 1.5
    assert connect_timeout(None) is None
    assert grpc_timeout(b"2S") == 2.0
    assert grpc_timeout(b"250m") == 0.25
    assert grpc_timeout(b"1H") == 3600.0
    for bad in (b"-1", b"12345678901", b"1.5"):
        with pytest.raises(ValueError, match="connect-timeout-ms"):
            connect_timeout(bad)
    for bad in (b"5", b"5x", b"S", b"123456789S"):
        with pytest.raises(ValueError, match="grpc-timeout"):
            grpc_timeout(bad)


def test_grpc_web_trailers_percent_encode_the_message_and_carry_the_details():
    status = status_for(NotFound("café 100% gone"), domain="shop", method="/x/Y")
    lines = grpc_web_trailers(status).decode()
    assert "grpc-status: 5\r\n" in lines
    assert "grpc-message: caf%C3%A9 100%25 gone\r\n" in lines
    assert "grpc-status-details-bin: " in lines
    assert grpc_web_trailers(None) == b"grpc-status: 0\r\ngrpc-message: \r\n"


def test_cors_allows_only_the_configured_origins_and_validates_them():
    cors = Cors(origins=("http://shop.test",))
    assert cors.headers(b"http://evil.test") == []
    assert dict(cors.headers(b"http://shop.test"))[b"access-control-allow-origin"] == (
        b"http://shop.test"
    )
    assert Cors(origins=("*",)).allows(b"http://anything.test")
    with pytest.raises(ConfigurationError, match="scheme://host"):
        Cors(origins=("shop.test",))


async def test_a_preflight_from_an_allowed_origin_is_answered_and_responses_expose_grpc_status():
    from tests.unit.test_connect_calls import GET, app_of, echo_router

    config = ConnectConfig(port=0, cors_origins=("http://shop.test",), grace_seconds=1.0)
    async with ConnectServer(app_of(echo_router()), config) as server:
        asked = {
            "Origin": "http://shop.test",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,connect-protocol-version",
        }
        preflight = await request(
            server.url + GET, method="OPTIONS", content_type=None, headers=asked
        )
        other = await request(
            server.url + GET, method="OPTIONS", content_type=None,
            headers={**asked, "Origin": "http://evil.test"},
        )  # fmt: skip
        call = await request(server.url + GET, b"{}", headers={"Origin": "http://shop.test"})
    assert preflight.status == 204
    assert preflight.headers["access-control-allow-origin"] == "http://shop.test"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    allowed = preflight.headers["access-control-allow-headers"].lower()
    assert "connect-protocol-version" in allowed
    assert "content-type" in allowed
    assert other.status == 403
    assert "access-control-allow-origin" not in other.headers
    assert call.headers["access-control-allow-origin"] == "http://shop.test"
    assert "Grpc-Status" in call.headers["access-control-expose-headers"]
