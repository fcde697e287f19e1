"""The README's "Running in production" example, run as written, through a subprocess.

The ``production-app`` block is written as ``shop_prod.py`` and the
``production-run`` block's ``wirebus db upgrade`` and ``wirebus run`` lines
are run with it, through the checked copy of ``tests/readme_blocks.py``
(:class:`~tests.readme_blocks.ProductionSubstitutions` says what it changes:
the collector's address and the JWKS URL become this test's servers, the
certificate paths its files, the ports free ones; the shared plaintext Kafka
and a fresh PostgreSQL database replace the user's SASL_SSL cluster and
database; the block's other exports, ``GRPC_VERBOSITY``, are applied as written).
Around the server, on 127.0.0.1 (``production_servers.py``):

- a CA (trustme) that signed the server's certificate, a client's, and the
  certificate of the two servers below (the subprocess trusts it through
  ``SSL_CERT_FILE`` for the JWKS and ``OTEL_EXPORTER_OTLP_CERTIFICATE`` for the
  collector, as the README's comment says);
- an HTTPS server publishing the JWKS of an RSA key that signs the test's JWTs;
- a fake OTLP/gRPC trace collector (``TraceService/Export``) that keeps what
  it receives. ``OTEL_BSP_SCHEDULE_DELAY=200`` makes the batch span
  processor export every 200 ms instead of 5 s.

The scenario runs once (module fixture); each test states one behaviour of it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

from tests.integration.production_servers import Collector, Files, Issuer, JwksServer
from tests.integration.test_shop_on_kafka import PYTHONPATH, free_port
from tests.readme_blocks import (
    ProductionRun,
    ProductionSubstitutions,
    blocks,
    checked_production_app,
    checked_production_run,
)
from wirebus.settings import Settings
from wirebus.testing import wait_until
from wirebus.testing.databases import create_database, drop_database

pytestmark = pytest.mark.integration

CUSTOMER = f"prod-{uuid.uuid4().hex[:8]}"  # a payload: never in a log line
SERVICE = "shop.orders.v1.OrderService"


@dataclasses.dataclass(frozen=True)
class Call:
    """One call the test made: its method, the code it got, the traceparent it sent."""

    method: str
    code: grpc.StatusCode
    trace_id: str
    span_id: str


@dataclasses.dataclass
class Observed:
    """What the scenario saw: the calls, the server's output, its metrics and spans."""

    health: int = 0
    without_certificate: grpc.StatusCode | None = None
    calls: list[Call] = dataclasses.field(default_factory=list)
    tokens: list[str] = dataclasses.field(default_factory=list)
    metrics: str = ""
    spans: dict[str, trace_pb2.Span] = dataclasses.field(default_factory=dict)
    exit_code: int | None = None
    stopped_in: float = 0.0
    grace: float = 0.0
    stderr: str = ""
    jwks_gets: int = 0
    by_label: dict[str, grpc.StatusCode] = dataclasses.field(default_factory=dict)


def call(
    stub: Any, method: str, request: Any, observed: Observed, label: str, token: str | None
) -> Any:
    """``stub.method(request)`` with a fresh traceparent (and ``token``); its outcome is
    recorded under ``label``."""
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    metadata = [("traceparent", f"00-{trace_id}-{span_id}-01")]
    if token is not None:
        metadata.append(("authorization", f"Bearer {token}"))
    reply, code = None, grpc.StatusCode.OK
    try:
        reply = getattr(stub, method)(request, metadata=metadata, timeout=30)
    except grpc.RpcError as exc:
        code = exc.code()
    observed.calls.append(Call(f"/{SERVICE}/{method}", code, trace_id, span_id))
    observed.by_label[label] = code
    return reply


def server_env(files: Files, bootstrap: str, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WIREBUS_", "OTEL_"))}
    env.update(
        PYTHONPATH=PYTHONPATH, WIREBUS_KAFKA_BOOTSTRAP=bootstrap,
        WIREBUS_DATABASE_URL=database_url, SSL_CERT_FILE=str(files.ca),
        OTEL_EXPORTER_OTLP_CERTIFICATE=str(files.ca), OTEL_BSP_SCHEDULE_DELAY="200",
    )  # fmt: skip
    return env


def wirebus(args: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "wirebus", *args], cwd=cwd, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip


def wait(condition: Any, proc: subprocess.Popen[bytes], log: Path, within: float = 60) -> None:
    def done() -> bool:
        assert proc.poll() is None, log.read_text(errors="replace")
        return bool(condition())

    asyncio.run(wait_until(done, within=within, interval=0.1, message=lambda: log.read_text()))


def drive(port: int, files: Files, issuer: Issuer, observed: Observed) -> None:
    """Every call of the scenario, against the running server."""
    target = f"127.0.0.1:{port}"
    with grpc.secure_channel(target, files.client(certificate=False)) as anonymous:
        try:
            health_pb2_grpc.HealthStub(anonymous).Check(health_pb2.HealthCheckRequest(), timeout=10)
        except grpc.RpcError as exc:
            observed.without_certificate = exc.code()
    stranger = Issuer()  # same key id, another key: a bad signature
    expired, valid = issuer.token(expires_in=-60), issuer.token()
    canceller = issuer.token(scope="orders:read orders:cancel")
    observed.tokens += [expired, valid, canceller]
    with grpc.secure_channel(target, files.client()) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        observed.health = health.status
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        item = orders_pb2.LineItem(sku="book", quantity=1, price_cents=900)
        place = orders_pb2.PlaceOrderRequest(customer_id=CUSTOMER, items=[item])
        call(stub, "PlaceOrder", place, observed, "no token", None)
        call(stub, "PlaceOrder", place, observed, "expired", expired)
        call(stub, "PlaceOrder", place, observed, "bad signature", stranger.token())
        placed = call(stub, "PlaceOrder", place, observed, "valid", valid)
        order_id = placed.order_id if placed is not None else "none"
        get = orders_pb2.GetOrderRequest(order_id=order_id)
        call(stub, "GetOrder", get, observed, "get", valid)
        cancel = orders_pb2.CancelOrderRequest(order_id=order_id, reason="changed my mind")
        call(stub, "CancelOrder", cancel, observed, "cancel without scope", valid)
        call(stub, "CancelOrder", cancel, observed, "cancel", canceller)


def substitutions(files: Files, collector: int, jwks_url: str) -> ProductionSubstitutions:
    return ProductionSubstitutions(
        collector=f"127.0.0.1:{collector}", jwks_url=jwks_url, port=free_port(),
        metrics_port=free_port(), tls_cert=str(files.server_cert), tls_key=str(files.server_key),
        client_ca=str(files.ca), group=f"prod-{uuid.uuid4().hex[:8]}",
    )  # fmt: skip


@pytest.fixture(scope="module")
def database(services: dict[str, str]) -> Iterator[str]:
    name = f"prod_{uuid.uuid4().hex[:12]}"
    url = services["WIREBUS_DATABASE_URL"]
    created = asyncio.run(create_database(url, name))
    yield created
    asyncio.run(drop_database(url, name))


@pytest.fixture(scope="module")
def observed(
    services: dict[str, str], database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Observed]:
    workdir = tmp_path_factory.mktemp("production")
    files, issuer, seen = Files.make(workdir), Issuer(), Observed()
    jwks, collector = JwksServer(issuer.jwks(), files), Collector(files)
    collector.server.start()
    try:
        subs = substitutions(files, collector.port, jwks.start())
        (workdir / "shop_prod.py").write_text(
            checked_production_app(blocks()["production-app"].text, subs), encoding="utf-8"
        )
        run = checked_production_run(blocks()["production-run"].text, subs)
        env = server_env(files, services["WIREBUS_KAFKA_BOOTSTRAP"], database)
        env.update(run.environment())
        run_scenario(run, subs, workdir, env, (files, issuer, collector), seen)
        seen.jwks_gets = jwks.gets
        yield seen
    finally:
        jwks.stop()
        collector.server.stop(grace=None)


def run_scenario(
    run: ProductionRun, subs: ProductionSubstitutions, workdir: Path, env: dict[str, str],
    parts: tuple[Files, Issuer, Collector], seen: Observed,
) -> None:  # fmt: skip
    files, issuer, collector = parts
    upgrade, serve = run.commands
    assert upgrade[:2] == ["db", "upgrade"], run.commands
    assert serve[0] == "run", run.commands
    subprocess.run(
        [sys.executable, "-m", "wirebus", *upgrade], cwd=workdir, env=env, check=True,
        capture_output=True, timeout=120,
    )  # fmt: skip
    log = workdir / "run.log"
    proc = wirebus(serve, workdir, env, log)
    try:
        wait(lambda: "serving on" in log.read_text(errors="replace"), proc, log)
        drive(subs.port, files, issuer, seen)
        seen.metrics = scrape(subs.metrics_port)
        for c in seen.calls:
            wait(lambda c=c: collector.server_span(c.trace_id) is not None, proc, log, within=30)
            seen.spans[c.trace_id] = collector.server_span(c.trace_id)  # type: ignore[assignment]
        seen.grace = float(serve[serve.index("--grace") + 1])
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        seen.exit_code = proc.wait(seen.grace + 10)
        seen.stopped_in = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        seen.stderr = log.read_text(errors="replace")


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return str(reply.read().decode())


def handled(metrics: str) -> dict[tuple[str, str], float]:
    """``grpc_server_handled_total`` by (method, code)."""
    counts: dict[tuple[str, str], float] = {}
    for line in metrics.splitlines():
        if line.startswith("grpc_server_handled_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            counts[(labels["grpc_method"], labels["grpc_code"])] = float(line.rsplit(" ", 1)[1])
    return counts


def json_lines(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


# --- the README blocks themselves -----------------------------------------------------


def test_the_production_blocks_name_only_extras_and_settings_that_exist() -> None:
    from tests.unit.test_readme_commands import declared_extras

    app_block = blocks()["production-app"].text
    named = {e for m in re.findall(r"wirebus\[([\w,-]+)\]", app_block) for e in m.split(",")}
    subs = ProductionSubstitutions(
        collector="c:1", jwks_url="https://k", port=1, metrics_port=2, tls_cert="cert",
        tls_key="key", client_ca="ca", group="g",
    )  # fmt: skip
    exports = checked_production_run(blocks()["production-run"].text, subs).exports

    assert named
    assert named <= declared_extras()
    settings = Settings.from_env(exports)  # raises on a setting that does not hold together
    assert settings.kafka_bootstrap == exports["WIREBUS_KAFKA_BOOTSTRAP"]
    assert settings.kafka_security.protocol == "SASL_SSL"
    assert settings.kafka_security.sasl_mechanism == "SCRAM-SHA-512"
    assert settings.kafka_security.ca_file == exports["WIREBUS_KAFKA_SSL_CAFILE"]
    assert settings.database_url == exports["WIREBUS_DATABASE_URL"]


# --- what the server does -------------------------------------------------------------


def test_health_is_serving_over_tls_with_the_client_certificate(observed: Observed) -> None:
    assert observed.health == health_pb2.HealthCheckResponse.SERVING


def test_a_client_without_a_certificate_is_refused_at_the_handshake(observed: Observed) -> None:
    assert observed.without_certificate == grpc.StatusCode.UNAVAILABLE


def test_a_call_without_a_token_or_with_a_bad_one_is_unauthenticated(observed: Observed) -> None:
    for label in ("no token", "expired", "bad signature"):
        assert observed.by_label[label] == grpc.StatusCode.UNAUTHENTICATED, label


def test_a_valid_jwt_places_and_reads_an_order(observed: Observed) -> None:
    assert observed.by_label["valid"] == grpc.StatusCode.OK
    assert observed.by_label["get"] == grpc.StatusCode.OK
    assert observed.jwks_gets >= 1  # the keys came from the JWKS URL


def test_cancelling_needs_the_orders_cancel_scope(observed: Observed) -> None:
    assert observed.by_label["cancel without scope"] == grpc.StatusCode.PERMISSION_DENIED
    assert observed.by_label["cancel"] == grpc.StatusCode.OK


def test_the_metrics_port_counts_each_call_by_method_and_code(observed: Observed) -> None:
    counts = handled(observed.metrics)

    # the codes as the gRPC Prometheus middlewares spell them
    assert counts[("PlaceOrder", "Unauthenticated")] == 3
    assert counts[("PlaceOrder", "OK")] == 1
    assert counts[("GetOrder", "OK")] == 1
    assert counts[("CancelOrder", "PermissionDenied")] == 1
    assert counts[("CancelOrder", "OK")] == 1


def test_stderr_is_json_with_one_access_line_per_call_and_no_payloads(observed: Observed) -> None:
    lines = observed.stderr.splitlines()
    records = json_lines(observed.stderr)
    access = [r for r in records if r["logger"] == "wirebus.access"]
    app_calls = [r for r in access if r["grpc_method"].startswith(f"/{SERVICE}/")]

    assert [(r["grpc_method"], r["grpc_code"]) for r in app_calls] == [
        (c.method, c.code.name) for c in observed.calls
    ]
    assert all(isinstance(r, dict) for r in records)
    # besides them, only the command's two status lines (what a script waits for)
    plain = [line for line in lines if not line.startswith("{")]
    assert [line.split(" ", 3)[:3] for line in plain] == [
        ["wirebus", "run:", "shop"],
        ["wirebus", "run:", "stopping"],
    ], plain
    assert CUSTOMER not in observed.stderr
    assert not [t for t in observed.tokens if t in observed.stderr]


def test_each_call_has_a_server_span_continuing_the_clients_traceparent(
    observed: Observed,
) -> None:
    for c in observed.calls:
        span = observed.spans[c.trace_id]
        assert span.parent_span_id.hex() == c.span_id, c
        assert span.name == c.method.removeprefix("/"), c
        codes = {a.key: a.value.int_value for a in span.attributes}
        assert codes["rpc.grpc.status_code"] == c.code.value[0], c


def test_sigterm_stops_the_server_with_exit_code_0_within_the_grace(observed: Observed) -> None:
    assert observed.exit_code == 0, observed.stderr[-3000:]
    assert observed.stopped_in < observed.grace
