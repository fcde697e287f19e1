"""Shared fixtures: helpers for talking to a gateway over a real loopback socket."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc.aio
import pytest
from google.rpc import error_details_pb2, status_pb2

from wirebus import App, Gateway, GatewayConfig

FIGURES = pytest.StashKey[list[str]]()
"""Where the soak and fuzz tests put the figures they report (see :func:`figures`)."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("wirebus", "wirebus soak, fuzz and fault sizes")
    group.addoption(
        "--soak-seconds", type=float, default=60.0,
        help="How long tests/soak drives the shop (default 60, the CI length).",
    )  # fmt: skip
    group.addoption(
        "--fuzz-examples", type=int, default=300,
        help="Hypothesis examples per fuzz target (default 300, derandomized, for CI).",
    )  # fmt: skip
    group.addoption(
        "--saga-checkouts", type=int, default=1000,
        help="Concurrent checkouts of the saga crash test (default 1000, the CI size).",
    )  # fmt: skip


@pytest.fixture(scope="session")
def figures(pytestconfig: pytest.Config) -> list[str]:
    """Lines a test reports (throughput, RSS, examples/s), printed after the run."""
    return pytestconfig.stash.setdefault(FIGURES, [])


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    lines = config.stash.get(FIGURES, [])
    if lines:
        terminalreporter.section("figures (soak, fuzz, faults)")
        for line in lines:
            terminalreporter.write_line(line)


def status_details(err: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    """The ``google.rpc.Status`` an error carried in ``grpc-status-details-bin``."""
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    return None


def error_info(err: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo | None:
    status = status_details(err)
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def bad_request(err: grpc.aio.AioRpcError) -> error_details_pb2.BadRequest | None:
    status = status_details(err)
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return bad
    return None


@pytest.fixture
def serve():
    """``async with serve(app) as channel``: a gateway on 127.0.0.1 and a channel to it."""
    import contextlib

    @contextlib.asynccontextmanager
    async def _serve(app: App, **config: object) -> AsyncIterator[grpc.aio.Channel]:
        cfg = GatewayConfig(host="127.0.0.1", port=0, grace_seconds=1.0, **config)  # type: ignore[arg-type]
        async with (
            Gateway(app, cfg) as gateway,
            grpc.aio.insecure_channel(gateway.address) as channel,
        ):
            yield channel

    return _serve
