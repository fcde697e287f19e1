"""The Connect port against a hostile client: bad input gets a clear error, cost stays bounded.

Every test talks to a real ``ConnectServer`` (uvicorn) on 127.0.0.1 over raw
sockets, as an attacker would: malformed, truncated, oversized, compressed
and mislabelled bodies; lying envelopes; bad headers; slow and idle
connections; too many of them. Each answer is Connect's error JSON (or a
gRPC-Web / end-of-stream status) with the spec's HTTP status and nothing of
the server's internals, or the connection is closed -- and the port still
serves the next call.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from shop.orders.v1 import orders_pb2
from sqlalchemy.ext.asyncio import AsyncSession

from tests.unit._connect import Response, envelope, frames, open_request, parse, request, trailers
from wirebus import App, Router
from wirebus.connect import ConnectConfig, ConnectServer
from wirebus.db import Database
from wirebus.errors import ConfigurationError
from wirebus.testing import wait_until

GET = "/shop.orders.v1.OrderService/GetOrder"
LIST = "/shop.orders.v1.OrderService/ListOrders"
LEAKS = ("Traceback", 'File "', ".py", "/work/", "site-packages", "Error:")
"""What no error message may contain: tracebacks, paths, Python exception names."""

HTTP_OF_CODE = {
    "invalid_argument": 400,
    "resource_exhausted": 429,
    "unimplemented": 501,
    "not_found": 404,
    "unavailable": 503,
    "deadline_exceeded": 504,
}


def orders_router() -> Router:
    router = Router()

    @router.handler
    async def get_order(query: orders_pb2.GetOrderRequest) -> orders_pb2.Order:
        return orders_pb2.Order(order_id=query.order_id)

    @router.handler
    async def list_orders(query: orders_pb2.ListOrdersRequest) -> AsyncIterator[orders_pb2.Order]:
        yield orders_pb2.Order(order_id=query.customer_id)

    return router


def app_of(router: Router, **kwargs: Any) -> App:
    return App(name="test", services=[orders_pb2], routers=[router], allow_unbound=True, **kwargs)


@contextlib.asynccontextmanager
async def serving(router: Router | None = None, **config: Any) -> AsyncIterator[ConnectServer]:
    config.setdefault("grace_seconds", 1.0)
    app = app_of(router or orders_router())
    async with ConnectServer(app, ConnectConfig(port=0, **config), **_mediator(config)) as server:
        yield server


def _mediator(config: dict[str, Any]) -> dict[str, Any]:
    mediator = config.pop("mediator", None)
    return {} if mediator is None else {"mediator": mediator}


async def raw(server: ConnectServer, data: bytes, *, within: float = 10.0) -> bytes:
    """Send ``data`` as is; everything the server answers until it closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), within)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def head(path: str, content_type: str | None, length: int | None, extra: str = "") -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: test", "Connection: close"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode("latin-1")


def assert_connect_error(reply: Response, status: int, code: str, says: str = "") -> None:
    """A Connect unary error: the spec's HTTP status, its JSON, a clear and clean message."""
    assert reply.status == status, reply.body
    assert reply.headers["content-type"] == "application/json"
    error = reply.json()
    assert error["code"] == code
    assert HTTP_OF_CODE[code] == status
    assert says in error["message"]
    assert not [leak for leak in LEAKS if leak in error["message"]], error["message"]


def end_of_stream_error(reply: Response) -> dict[str, Any]:
    """The error of a Connect streaming response (HTTP 200, then the end-of-stream message)."""
    assert reply.status == 200
    *_, (flags, end) = frames(reply.body)
    assert flags == 0x02
    error: dict[str, Any] = json.loads(end)["error"]
    return error


def grpc_web_status(reply: Response) -> dict[str, str]:
    assert reply.status == 200
    *_, (flags, frame) = frames(reply.body)
    assert flags == 0x80
    return trailers(frame)


async def still_serves(server: ConnectServer) -> None:
    reply = await request(server.url + GET, b'{"orderId": "o-1"}')
    assert (reply.status, reply.json()) == (200, {"orderId": "o-1"})


# -- bodies ------------------------------------------------------------------------------

UNARY_CASES = [
    pytest.param(b"\xff\xff\xff", "application/proto", 400, "invalid_argument", "do not parse",
                 id="malformed protobuf"),
    pytest.param(b"\x0a\x10abc", "application/proto", 400, "invalid_argument", "do not parse",
                 id="truncated protobuf"),
    pytest.param(b"{{{", "application/json", 400, "invalid_argument", "does not parse",
                 id="not JSON"),
    pytest.param(b"null", "application/json", 400, "invalid_argument", "must be a JSON object",
                 id="JSON null"),
    pytest.param(b"[1, 2]", "application/json", 400, "invalid_argument", "must be a JSON object",
                 id="JSON array"),
    pytest.param(b'{"orderId": 12}', "application/json", 400, "invalid_argument", "orderId",
                 id="JSON wrong type"),
    pytest.param(b'{"orderId": "\xff\xfe"}', "application/json", 400, "invalid_argument",
                 "utf-8", id="invalid UTF-8"),
    pytest.param(b'{"orderId": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "application/json",
                 400, "invalid_argument", "nested too deeply", id="deeply nested JSON"),
    pytest.param(b"{}", None, 415, "unimplemented", "content-type", id="no content-type"),
    pytest.param(b"{}", "text/plain", 415, "unimplemented", "content-type",
                 id="wrong content-type"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "content_type", "status", "code", "says"), UNARY_CASES)
async def test_a_bad_unary_body_gets_a_clear_connect_error_and_the_port_goes_on(
    body: bytes, content_type: str | None, status: int, code: str, says: str
) -> None:
    async with serving() as server:
        reply = await request(server.url + GET, body, content_type=content_type)
        if status == 415:  # not a Connect request: the error says which types are
            assert reply.status == 415
            assert "application/json" in reply.headers["accept-post"]
            assert reply.json()["code"] == code
        else:
            assert_connect_error(reply, status, code, says)
        await still_serves(server)


async def test_unknown_json_fields_are_ignored_as_connect_servers_do() -> None:
    async with serving() as server:
        reply = await request(server.url + GET, b'{"orderId": "o-2", "fromTheFuture": [1]}')
    assert (reply.status, reply.json()) == (200, {"orderId": "o-2"})


async def test_a_content_length_above_the_max_message_size_is_refused_before_the_body() -> None:
    async with serving(max_message_bytes=1024) as server:
        # only the head is sent: the answer cannot wait for a body that never comes
        answer = await raw(server, head(GET, "application/json", 10**12))
        reply = parse(answer)
        assert_connect_error(reply, 429, "resource_exhausted", "larger than 1024 bytes")
        assert reply.headers["connection"] == "close"
        await still_serves(server)


async def test_bytes_past_the_content_length_are_not_part_of_the_body() -> None:
    async with serving() as server:
        answer = await raw(server, head(GET, "application/json", 2) + b"{}GARBAGE")
        reply = parse(answer)
    # the two bytes declared were the request (a valid, empty one)
    assert (reply.status, reply.json()) == (200, {})


async def test_a_gzip_bomb_is_refused_at_the_max_message_size_while_inflating() -> None:
    bomb = gzip.compress(b"\x00" * (64 << 20))  # 64 KiB that inflates to 64 MiB
    assert len(bomb) < 100_000
    async with serving(max_message_bytes=1 << 20) as server:
        unary = await request(server.url + GET, bomb, headers={"Content-Encoding": "gzip"})
        assert_connect_error(unary, 429, "resource_exhausted", "larger than 1048576 bytes")
        web = await request(
            server.url + GET, envelope(bomb, 0x01), content_type="application/grpc-web",
            headers={"Grpc-Encoding": "gzip"},
        )  # fmt: skip
        assert grpc_web_status(web)["grpc-status"] == "8"  # RESOURCE_EXHAUSTED
        await still_serves(server)


async def test_an_unknown_compression_is_unimplemented_even_on_an_uncompressed_message() -> None:
    async with serving() as server:
        unary = await request(server.url + GET, b"{}", headers={"Content-Encoding": "br"})
        assert_connect_error(unary, 501, "unimplemented", "'br' is not supported")
        web = await request(
            server.url + GET, envelope(b""), content_type="application/grpc-web",
            headers={"Grpc-Encoding": "br"},
        )  # fmt: skip
        assert grpc_web_status(web)["grpc-status"] == "12"  # UNIMPLEMENTED


# -- envelopes ---------------------------------------------------------------------------


async def test_an_envelope_whose_length_prefix_lies_is_invalid_argument() -> None:
    async with serving() as server:
        longer = b"\x00\xff\xff\xff\xff{}"  # says 4 GiB, carries 2 bytes
        reply = await request(server.url + LIST, longer, content_type="application/connect+json")
        error = end_of_stream_error(reply)
        assert error["code"] == "invalid_argument"
        assert "exactly one enveloped message" in error["message"]
        shorter = envelope(b"") + b"trailing"
        web = await request(server.url + GET, shorter, content_type="application/grpc-web")
        assert grpc_web_status(web)["grpc-status"] == "3"


async def test_a_client_frame_with_the_grpc_web_trailers_flag_is_refused() -> None:
    async with serving() as server:
        frame = envelope(b"grpc-status: 0\r\n", 0x80)
        reply = await request(server.url + GET, frame, content_type="application/grpc-web+proto")
    status = grpc_web_status(reply)
    assert status["grpc-status"] == "3"
    assert "flags are 0 or 1" in status["grpc-message"]


async def test_a_connect_request_with_the_end_stream_flag_is_refused() -> None:
    async with serving() as server:
        frame = envelope(b'{"customerId": "c"}', 0x02)
        reply = await request(server.url + LIST, frame, content_type="application/connect+json")
    error = end_of_stream_error(reply)
    assert error["code"] == "invalid_argument"
    assert "not 0x02" in error["message"]


# -- methods, paths, headers -------------------------------------------------------------


async def test_unknown_paths_are_unimplemented_and_other_http_methods_405() -> None:
    async with serving(cors_origins=("http://good.example",)) as server:
        for path in ("/nope.v1.Nope/Nope", "/", "/../../etc/passwd"):
            reply = await request(server.url + path, b"{}")
            assert_connect_error(reply, 501, "unimplemented", "is not a method here")
        for method in ("GET", "PUT", "DELETE", "PATCH"):
            reply = await request(server.url + GET, b"", method=method)
            assert (reply.status, reply.headers["allow"]) == (405, "POST, OPTIONS")
            assert reply.json()["code"] == "unimplemented"
        head_reply = await request(server.url + GET, b"", method="HEAD")
        assert (head_reply.status, head_reply.body) == (405, b"")
        preflight = await request(
            server.url + GET, b"", content_type=None, method="OPTIONS",
            headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        )  # fmt: skip
        assert preflight.status == 403
        assert not [h for h in preflight.headers if h.startswith("access-control-")]


TIMEOUT_CASES = [
    pytest.param("Connect-Timeout-Ms", "soon", id="connect-timeout-ms garbage"),
    pytest.param("Connect-Timeout-Ms", "-5", id="connect-timeout-ms negative"),
    pytest.param("Connect-Timeout-Ms", "12345678901", id="connect-timeout-ms past 10 digits"),
    pytest.param("Grpc-Timeout", "1X", id="grpc-timeout bad unit"),
    pytest.param("Grpc-Timeout", "S", id="grpc-timeout no digits"),
    pytest.param("Grpc-Timeout", "123456789S", id="grpc-timeout past 8 digits"),
]


@pytest.mark.parametrize(("header", "value"), TIMEOUT_CASES)
async def test_a_bad_timeout_header_is_invalid_argument_naming_the_header(
    header: str, value: str
) -> None:
    async with serving() as server:
        if header == "Grpc-Timeout":
            reply = await request(
                server.url + GET, envelope(b""), content_type="application/grpc-web",
                headers={header: value},
            )  # fmt: skip
            status = grpc_web_status(reply)
            assert (status["grpc-status"], "grpc-timeout" in status["grpc-message"]) == ("3", True)
        else:
            reply = await request(server.url + GET, b"{}", headers={header: value})
            assert_connect_error(reply, 400, "invalid_argument", f"not '{value[:16]}'")


async def test_a_connect_protocol_version_other_than_1_is_invalid_argument() -> None:
    async with serving() as server:
        reply = await request(server.url + GET, b"{}", headers={"Connect-Protocol-Version": "2"})
        assert_connect_error(reply, 400, "invalid_argument", "connect-protocol-version must be 1")
        ok = await request(server.url + GET, b"{}", headers={"Connect-Protocol-Version": "1"})
        assert ok.status == 200


async def test_a_request_head_above_max_header_bytes_gets_431_and_is_not_buffered() -> None:
    async with serving(max_header_bytes=4096) as server:
        big = head(GET, "application/json", 2, extra=f"X-Big: {'a' * 5000}\r\n")
        reply = parse(await raw(server, big))
        assert reply.status == 431
        assert reply.json()["code"] == "resource_exhausted"
        fits = head(GET, "application/json", 2, extra=f"X-Big: {'a' * 3000}\r\n") + b"{}"
        assert parse(await raw(server, fits)).status == 200


async def test_a_request_that_is_not_http_gets_a_connect_error_and_no_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    smuggled = (
        f"POST {GET} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    )
    async with serving() as server:
        for garbage in (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", smuggled.encode()):
            reply = parse(await raw(server, garbage))
            assert_connect_error(reply, 400, "invalid_argument", "not a valid HTTP/1.1 request")
        await still_serves(server)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_an_upgrade_request_with_a_body_is_refused_not_run_on_an_empty_body() -> None:
    h2c = (  # what curl --http2 adds to a plain-HTTP request
        "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        "HTTP2-Settings: AAMAAABkAAQAAP__\r\n"
    )
    async with serving() as server:
        body = b'{"orderId": "o-3"}'
        answer = await raw(server, head(GET, "application/json", len(body), extra=h2c) + body)
        assert_connect_error(parse(answer), 501, "unimplemented", "does not upgrade")
        plain = await request(server.url + GET, body)
        assert plain.json() == {"orderId": "o-3"}


# -- slow, idle and too many connections -------------------------------------------------


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """What the server sent before it closed the connection (within ``seconds``)."""
    return await asyncio.wait_for(reader.read(), seconds)


async def trickle(writer: asyncio.StreamWriter, data: bytes, every: float) -> None:
    """Send ``data`` one byte every ``every`` seconds, until the server closes."""
    with contextlib.suppress(ConnectionError):
        for byte in data:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(every)


async def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout() -> None:
    async with serving(header_timeout_seconds=0.5) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        assert await closed_within(reader, 5.0) == b""
        writer.close()
        await still_serves(server)


async def test_headers_sent_one_byte_at_a_time_are_cut_off_at_the_header_timeout() -> None:
    async with serving(header_timeout_seconds=0.5) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        slow = asyncio.create_task(trickle(writer, head(GET, "application/json", 2), 0.05))
        assert await closed_within(reader, 5.0) == b""
        assert not slow.done()  # cut off long before the head was all sent
        slow.cancel()
        writer.close()


async def test_a_slowloris_body_is_cut_off_at_the_body_timeout_and_holds_no_call_slot() -> None:
    async with serving(body_timeout_seconds=0.5, max_concurrent_calls=1) as server:
        body = b'{"orderId": "' + b"x" * 200 + b'"}'
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(head(GET, "application/json", len(body)))
        slow = asyncio.create_task(trickle(writer, body, 0.05))
        await still_serves(server)  # the one call slot is free meanwhile
        assert server.calls_in_flight == 0
        assert await closed_within(reader, 5.0) == b""
        assert not slow.done()
        slow.cancel()
        writer.close()


async def test_a_chunked_body_without_its_end_is_cut_off_at_the_body_timeout() -> None:
    async with serving(body_timeout_seconds=0.5) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        start = (
            f"POST {GET} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n"
        )
        writer.write(start.encode())
        assert await closed_within(reader, 5.0) == b""
        writer.close()
        await still_serves(server)


async def test_connections_past_max_connections_get_503_at_once_and_the_port_recovers() -> None:
    async with serving(max_connections=3, header_timeout_seconds=30.0) as server:
        idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        reply = parse(await closed_within(reader, 5.0))
        assert reply.status == 503
        assert reply.json()["code"] == "unavailable"
        assert "3 connections" in reply.json()["message"]
        writer.close()
        for _, idle_writer in idle:
            idle_writer.close()

        async def serves_again() -> bool:
            with contextlib.suppress(ConnectionError, ValueError, IndexError):
                return (await request(server.url + GET, b"{}")).status == 200
            return False

        await wait_until(serves_again, message="the port did not recover its connections")


async def test_a_request_pipelined_behind_a_slow_call_waits_for_it_and_is_answered() -> None:
    router = orders_router()

    running = asyncio.Event()

    @router.handler
    async def cancel_order(
        command: orders_pb2.CancelOrderRequest,
    ) -> orders_pb2.CancelOrderResponse:
        await asyncio.sleep(0.6)  # longer than the body timeout below
        running.set()
        await asyncio.sleep(0.4)
        return orders_pb2.CancelOrderResponse()

    async with serving(router, body_timeout_seconds=0.3) as server:
        cancel = "/shop.orders.v1.OrderService/CancelOrder"
        first = head(cancel, "application/json", 2).replace(b"Connection: close\r\n", b"")
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        # the second request's head at once, its body only once the first call runs
        writer.write(first + b"{}" + head(GET, "application/json", 18))
        await asyncio.wait_for(running.wait(), 10)  # past the body timeout
        writer.write(b'{"orderId": "o-5"}')
        answer = await closed_within(reader, 10.0)
        writer.close()
    assert answer.count(b"HTTP/1.1 200 OK") == 2
    assert answer.endswith(b'{"orderId": "o-5"}')


async def test_a_pipelined_slowloris_body_is_cut_off_once_its_turn_comes() -> None:
    async with serving(body_timeout_seconds=0.5) as server:
        first = head(GET, "application/json", 2).replace(b"Connection: close\r\n", b"")
        body = b'{"orderId": "' + b"x" * 200 + b'"}'
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(first + b"{}" + head(GET, "application/json", len(body)))
        slow = asyncio.create_task(trickle(writer, body, 0.05))
        answer = await closed_within(reader, 5.0)
        assert answer.count(b"HTTP/1.1 200 OK") == 1  # the first, then the connection closed
        assert not slow.done()
        slow.cancel()
        writer.close()


# -- a client that goes away mid-stream --------------------------------------------------

notes = sa.Table("notes", sa.MetaData(), sa.Column("text", sa.String, primary_key=True))


def writing_stream(wrote: asyncio.Event, ended: asyncio.Event) -> Router:
    router = Router()

    @router.handler
    async def list_orders(
        query: orders_pb2.ListOrdersRequest, session: AsyncSession
    ) -> AsyncIterator[orders_pb2.Order]:
        try:
            await session.execute(sa.insert(notes).values(text="first"))
            yield orders_pb2.Order(order_id="first")  # commits "first"
            await session.execute(sa.insert(notes).values(text="second"))
            wrote.set()
            await asyncio.Event().wait()  # the client leaves here
            yield orders_pb2.Order(order_id="never")
        finally:
            ended.set()

    return router


async def test_a_client_leaving_mid_stream_cancels_the_handler_and_rolls_back_its_work(
    tmp_path: Path,
) -> None:
    wrote, ended = asyncio.Event(), asyncio.Event()
    router = writing_stream(wrote, ended)
    db = Database(
        f"sqlite+aiosqlite:///{tmp_path}/stream.db", create_schema=True,
        extra_metadata=[notes.metadata],
    )  # fmt: skip
    app = app_of(router, metadata=notes.metadata)
    async with app.mediator(database=db) as mediator:
        config = ConnectConfig(port=0, grace_seconds=1.0)
        async with ConnectServer(app, config, mediator=mediator) as server:
            reader, writer = await open_request(
                server.url + LIST, envelope(b'{"customerId": "c"}'), "application/connect+json",
                None,
            )  # fmt: skip
            await reader.readuntil(b'"first"')
            await asyncio.wait_for(wrote.wait(), 10)
            writer.close()
            await asyncio.wait_for(ended.wait(), 10)
            await wait_until(lambda: server.calls_in_flight == 0)
        async with db.engine.connect() as conn:
            rows = (await conn.execute(sa.select(notes.c.text))).scalars().all()
    assert rows == ["first"]  # what it did after its last item was rolled back


async def test_a_client_leaving_a_unary_call_cancels_it_rolls_back_and_frees_its_slot(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wrote, cancelled = asyncio.Event(), asyncio.Event()
    router = orders_router()

    @router.handler
    async def cancel_order(
        command: orders_pb2.CancelOrderRequest, session: AsyncSession
    ) -> orders_pb2.CancelOrderResponse:
        await session.execute(sa.insert(notes).values(text=command.order_id))
        wrote.set()
        try:
            await asyncio.Event().wait()  # a slow handler: the client leaves meanwhile
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return orders_pb2.CancelOrderResponse()

    db = Database(
        f"sqlite+aiosqlite:///{tmp_path}/unary.db", create_schema=True,
        extra_metadata=[notes.metadata],
    )  # fmt: skip
    app = app_of(router, metadata=notes.metadata)
    async with app.mediator(database=db) as mediator:
        config = ConnectConfig(port=0, grace_seconds=1.0, max_concurrent_calls=1)
        async with ConnectServer(app, config, mediator=mediator) as server:
            cancel = "/shop.orders.v1.OrderService/CancelOrder"
            _, writer = await open_request(
                server.url + cancel, b'{"orderId": "o-9"}', "application/json", None
            )
            await asyncio.wait_for(wrote.wait(), 10)
            writer.close()
            await asyncio.wait_for(cancelled.wait(), 10)
            await wait_until(lambda: server.calls_in_flight == 0)
            await still_serves(server)  # the one slot is free again
        async with db.engine.connect() as conn:
            rows = (await conn.execute(sa.select(notes.c.text))).scalars().all()
    assert rows == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize(
    "bound",
    ["max_connections", "max_header_bytes", "header_timeout_seconds", "body_timeout_seconds",
     "keep_alive_seconds"],
)  # fmt: skip
def test_a_bound_that_is_not_positive_is_refused_at_construction_naming_it(bound: str) -> None:
    with pytest.raises(ConfigurationError, match=bound):
        ConnectConfig(**{bound: 0})
