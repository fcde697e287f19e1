"""Fuzzing the Connect port: any body, any envelope, any header, to every shop method.

The shop of ``conftest.py`` (outbox, relay, consumers) gets a ``ConnectServer``
on its own loop, sharing its mediator. For every method of the shop's
services, hypothesis sends, over a real HTTP/1.1 connection:

- binary Connect (``application/proto``) with the bytes of
  :func:`tests.fuzz.wire.message_bytes` (random, valid, mutated, nested);
- JSON Connect: valid messages as proto3 JSON, random JSON values, JSON
  text cut or spliced with garbage, random bytes;
- enveloped requests (streaming Connect, gRPC-Web) with any flags and a
  length prefix that may lie;
- now and then gzip (or an unknown compression) and a timeout header,
  valid or not.

Each answer is well-formed: a Connect response of the method's type, or
Connect's error JSON with the HTTP status of the spec's table; an
enveloped response ends with its end-of-stream (or trailers) frame. Never
``internal``/``unknown``/500, never a traceback or a path in a message,
nothing logged at ERROR, and the port answers a normal call afterwards.

A client-streaming method (``ImportOrders``) is fuzzed like the others (its
body a sequence of enveloped messages). A bidi method (``WatchOrders``) needs
HTTP/2 full duplex: this port refuses it by design (the README's "From a
browser" table), so every answer to it, whatever was sent, is a well-formed
``unimplemented`` (``grpc-status 12`` over gRPC-Web) naming the gRPC port,
before any byte of the body is read.
"""

from __future__ import annotations

import dataclasses
import gzip
import http.client
import json
import struct
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import MethodDescriptor
from hypothesis import given
from hypothesis import strategies as st

from examples.shop.app import app
from tests.fuzz.conftest import Logged, ThreadedShop
from tests.fuzz.wire import message_bytes, messages, settings_for
from wirebus.connect import ConnectConfig, ConnectServer

pytestmark = pytest.mark.fuzz

CALL_TIMEOUT = 10.0
"""Far above the few ms a call takes: a timeout means the port hung."""

ANSWERS = {
    "invalid_argument": 400,
    "not_found": 404,
    "failed_precondition": 400,
    "out_of_range": 400,
    "resource_exhausted": 429,
    "already_exists": 409,
    "unimplemented": 501,  # an unknown compression, a unary content-type on a stream
}
"""What the caller's input may earn, with the HTTP status the Connect spec gives it."""

LEAKS = ("Traceback", 'File "', ".py", "/work/", "site-packages")

REFUSALS = {"unimplemented", "grpc-status 12"}
"""The outcomes of a method this port does not serve (Connect's code, gRPC-Web's status)."""

METHODS = [
    pytest.param(method, id=f"{service.name}.{method.name}")
    for service in app.services
    for method in service.methods
]


@dataclasses.dataclass(frozen=True)
class Request:
    content_type: str
    headers: dict[str, str]
    body: bytes


@pytest.fixture(scope="module")
def connect_port(shop: ThreadedShop) -> Iterator[int]:
    """The port of a Connect server beside the shop's gateway, on the shop's loop."""
    config = ConnectConfig(port=0, grace_seconds=1.0, max_message_bytes=1 << 20)
    server = ConnectServer(app, config, mediator=shop.harness.mediator)
    shop.run(server.start)
    try:
        yield server.port
    finally:
        shop.run(server.stop)


@pytest.fixture
def connection(connect_port: int) -> Iterator[http.client.HTTPConnection]:
    conn = http.client.HTTPConnection("127.0.0.1", connect_port, timeout=CALL_TIMEOUT)
    try:
        yield conn
    finally:
        conn.close()


# ---------------------------------------------------------------- what is sent

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)


def json_bodies(method: MethodDescriptor) -> st.SearchStrategy[bytes]:
    valid = messages(method.input_type).map(lambda m: json_format.MessageToJson(m).encode())
    names = [f.json_name for f in method.input_type.fields]
    shaped = st.dictionaries(st.sampled_from(names) | st.text(max_size=8), JSON_VALUES)
    return st.one_of(
        valid,
        shaped.map(lambda d: json.dumps(d).encode()),
        JSON_VALUES.map(lambda v: json.dumps(v).encode()),
        st.tuples(valid, st.integers(0, 200), st.binary(max_size=8)).map(
            lambda t: t[0][: t[1]] + t[2]
        ),
        st.binary(max_size=64),
    )


@st.composite
def requests(draw: st.DrawFn, method: MethodDescriptor) -> Request:
    protocol = draw(st.sampled_from(["connect", "connect", "connect-stream", "grpc-web"]))
    codec = draw(st.sampled_from(["proto", "json"]))
    payload = draw(json_bodies(method) if codec == "json" else message_bytes(method.input_type))
    headers: dict[str, str] = {}
    compression = draw(st.sampled_from([None, None, None, "gzip", "identity", "br"]))
    if compression == "gzip" and draw(st.booleans()):
        payload = gzip.compress(payload)
    if protocol == "connect":
        content_type = f"application/{codec}"
        body = payload
        encoding_header = "Content-Encoding"
    else:
        flags = draw(st.sampled_from([0, 0, 0, 1, 2, 0x80]))
        length = draw(st.sampled_from([len(payload)] * 4 + [0, len(payload) + 1, 2**32 - 1]))
        body = struct.pack(">BI", flags, length) + payload
        if protocol == "grpc-web":
            content_type = "application/grpc-web" + ("+json" if codec == "json" else "")
            encoding_header = "Grpc-Encoding"
        else:
            content_type = f"application/connect+{codec}"
            encoding_header = "Connect-Content-Encoding"
    if compression is not None:
        headers[encoding_header] = compression
    timeout = draw(st.sampled_from([None, None, "30000", "soon", "-1", "30S", "1Q"]))
    if timeout is not None:
        headers["Grpc-Timeout" if protocol == "grpc-web" else "Connect-Timeout-Ms"] = timeout
    return Request(content_type, headers, body)


# ---------------------------------------------------------------- what must come back


def post(
    conn: http.client.HTTPConnection, path: str, req: Request, *, retry: bool = True
) -> tuple[int, dict[str, str], bytes]:
    """POST ``req``; once more on a fresh connection if a kept-alive one was closed meanwhile.

    (The server closes a connection idle for ``keep_alive_seconds``; a slow
    example can find its connection closed, as any HTTP client's pool can.
    An answer missing twice is a failure.)
    """
    headers = {"Content-Type": req.content_type, **req.headers}
    try:
        conn.request("POST", path, body=req.body, headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    except (ConnectionError, http.client.RemoteDisconnected):
        conn.close()
        if not retry:
            raise
        return post(conn, path, req, retry=False)


def checked_error(error: dict[str, Any], status: int | None) -> str:
    """The code of a Connect error object, checked: a client's error, clean, right status."""
    code = error["code"]
    assert code in ANSWERS, f"{code}: {error.get('message')}"
    if status is not None:
        assert status == ANSWERS[code], (status, error)
    message = error.get("message", "")
    assert isinstance(message, str)
    assert not [leak for leak in LEAKS if leak in message], message
    return _named(str(code), message)


def _named(code: str, message: str) -> str:
    """``malformed`` for a request refused before decoding; any other code reached the pipeline."""
    return "malformed" if "parse" in message or "envelope" in message else code


def split_frames(body: bytes) -> list[tuple[int, bytes]]:
    """The frames of an enveloped response; every byte belongs to exactly one."""
    frames = []
    while body:
        assert len(body) >= 5, body
        flags, length = struct.unpack(">BI", body[:5])
        assert len(body) >= 5 + length, body
        frames.append((flags, body[5 : 5 + length]))
        body = body[5 + length :]
    return frames


def checked_answer(method: MethodDescriptor, req: Request, status: int, body: bytes) -> str:
    """The outcome of one request (``ok`` or a Connect code), once its shape is checked."""
    response_type = message_factory.GetMessageClass(method.output_type)
    json_codec = req.content_type.endswith("json")
    if req.content_type in ("application/proto", "application/json"):
        if status != 200:
            return checked_error(json.loads(body), status)
        if json_codec:
            json_format.Parse(body, response_type())
        else:
            response_type.FromString(body)
        return "ok"
    assert status == 200, body
    *items, (last, end) = split_frames(body)
    for flags, item in items:
        assert flags == 0
        if json_codec:
            json_format.Parse(item, response_type())
        else:
            response_type.FromString(item)
    if req.content_type.startswith("application/connect"):
        assert last == 0x02
        error = json.loads(end).get("error")
        return "ok" if error is None else checked_error(error, None)
    assert last == 0x80
    lines = dict(line.split(": ", 1) for line in end.decode().split("\r\n") if line)
    code = int(lines["grpc-status"])
    assert code in (0, 3, 5, 8, 9, 11, 12, 6), lines  # OK or a client's error, never 2/13
    message = lines.get("grpc-message", "")
    assert not [leak for leak in LEAKS if leak in message], lines
    return "ok" if code == 0 else _named(f"grpc-status {code}", message)


def still_answers(conn: http.client.HTTPConnection, port: int) -> None:
    fresh = http.client.HTTPConnection("127.0.0.1", port, timeout=CALL_TIMEOUT)
    try:
        fresh.request("GET", "/healthz")
        assert fresh.getresponse().read() == b'{"status": "SERVING"}'
        req = Request("application/json", {}, b'{"orderId": "no-such-order"}')
        status, _, body = post(fresh, "/shop.orders.v1.OrderService/GetOrder", req)
        assert (status, json.loads(body)["code"]) == (404, "not_found")
    finally:
        fresh.close()


@pytest.mark.parametrize("method", METHODS)
def test_any_request_over_connect_gets_a_well_formed_answer_and_the_port_goes_on(
    method: MethodDescriptor,
    connection: http.client.HTTPConnection,
    connect_port: int,
    logged: Logged,
    fuzz_examples: int,
    figures: list[str],
) -> None:
    path = f"/{method.containing_service.full_name}/{method.name}"
    outcomes: dict[str, int] = {}
    logged.take()

    @settings_for(fuzz_examples)
    @given(requests(method))
    def any_request(req: Request) -> None:
        status, _, body = post(connection, path, req)
        outcome = checked_answer(method, req, status, body)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        assert logged.take() == [], f"logged at ERROR for {req!r}"
        if _bidi(method):  # refused whatever is sent
            assert outcome in REFUSALS, (req, status, body)
            assert "gRPC port" in urllib.parse.unquote(body.decode(errors="replace")), body

    started = time.monotonic()
    any_request()
    elapsed = time.monotonic() - started
    still_answers(connection, connect_port)
    examples = sum(outcomes.values())
    figures.append(
        f"fuzz connect {method.full_name}: {examples} examples in {elapsed:.1f}s"
        f" ({examples / elapsed:.0f}/s); {dict(sorted(outcomes.items()))}"
    )
    if _bidi(method):
        assert outcomes.keys() <= REFUSALS  # never parsed, so never "malformed" either
        return
    assert "malformed" in outcomes  # some requests were garbage
    assert outcomes.keys() - {"malformed", *REFUSALS}  # some were not


def _bidi(method: MethodDescriptor) -> bool:
    return method.client_streaming and method.server_streaming
