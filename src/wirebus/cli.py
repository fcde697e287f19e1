"""The ``wirebus`` command line.

- ``wirebus serve MODULE:ATTR`` serves the app's gateway;
- ``wirebus run MODULE:ATTR`` runs everything of the app in one process:
  gateway and consumers, on the embedded in-memory broker unless
  ``WIREBUS_KAFKA_BOOTSTRAP`` names a Kafka cluster;
- ``wirebus consume MODULE:ATTR --group G`` runs the app's event handlers on
  Kafka records (``WIREBUS_KAFKA_BOOTSTRAP``);
- ``wirebus dlq replay --topic T.dlq`` sends dead letters back;
- ``wirebus describe MODULE:ATTR`` prints methods, events and topics;
- ``wirebus new NAME`` writes a minimal service to start from (``wirebus.new``).

A bad module path or a wiring error prints one ``Error:`` line; so does an app
whose generated protobuf code is missing (exit 2), saying to run ``buf
generate``. SIGTERM or Ctrl-C stops the gateway gracefully: calls running
finish within ``--grace``, every other call gets UNAVAILABLE at once.
``--max-concurrent-calls N`` answers call N+1 with RESOURCE_EXHAUSTED at
once; ``--no-reflection`` turns server reflection off. Each call writes one
line to the ``wirebus.access`` logger (``--log-format json``: every log line
is one JSON object); ``--metrics-port`` serves the ``grpc_server_*`` and
``wirebus_*`` metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import importlib.util
import logging
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, Literal, TypeVar

import click

from ._cli_logging import configure_logging
from ._missing_codegen import generated_python_dir, missing_codegen_hint
from .app import App
from .errors import ConfigurationError, PublishError, WirebusError
from .extras import require_extra
from .gateway import GatewayConfig
from .runtime import Runtime
from .settings import Settings

__all__ = ["load_app", "main", "run_async"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class _SetupError(click.ClickException, ConfigurationError):
    """The checkout is not ready to run the app (generated code missing): exit 2."""

    exit_code = 2


def load_app(target: str, app_dir: str = ".") -> App:
    """Import ``module.path:attribute`` and return the ``App`` it names."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise click.UsageError(
            f"expected MODULE:ATTR such as examples.shop.app:app, got {target!r}"
        )
    path = str(Path(app_dir).resolve())
    # The app's generated code, where its buf.gen.yaml writes it: no PYTHONPATH needed.
    generated = generated_python_dir(Path(path))
    for entry in ([str(generated)] if generated is not None else []) + [path]:
        if entry not in sys.path:
            sys.path.insert(0, entry)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        hint = missing_codegen_hint(exc, module_name, _app_roots(module_name, path))
        if hint is not None:
            raise _SetupError(f"cannot import {module_name!r}: {hint}") from None
        raise click.ClickException(f"cannot import {module_name!r}: {exc}") from None
    except WirebusError as exc:
        raise click.ClickException(f"{module_name}: {_one_line(exc)}") from None
    except Exception as exc:
        raise click.ClickException(
            f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    try:
        app = getattr(module, attr)
    except AttributeError:
        raise click.ClickException(f"module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(app, App):
        raise click.ClickException(f"{target} is a {type(app).__name__}, not a wirebus.App")
    return app


def _app_roots(module_name: str, app_dir: str) -> list[Path]:
    """Where the app lives: ``--app-dir`` and the directory of its module's file."""
    roots = [Path(app_dir)]
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin:
        roots.append(Path(spec.origin).parent)
    return roots


def _one_line(exc: BaseException) -> str:
    """A multi-line message as one line: ``head: item; item (note)``."""
    lines = [line.strip(" -") for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    text = lines[0]
    for line in lines[1:]:
        separator = " " if text.endswith(":") or line.startswith("(") else "; "
        text += separator + line
    return text


def _checked(app: App) -> App:
    try:
        app.check()
    except ConfigurationError as exc:
        raise click.ClickException(_one_line(exc)) from None
    return app


SETTLE_SECONDS = 5.0
"""How long the tasks still running when a command's work has ended get to finish."""


def run_async(
    main: Callable[[], Coroutine[Any, Any, None]], *, settle: float = SETTLE_SECONDS
) -> None:
    """Run on uvloop when it is installed (``pip install 'wirebus[uvloop]'``).

    When ``main`` returns, the tasks left are cancelled and get ``settle``
    seconds to end; a task that does not (a database driver's close waiting on
    a worker thread that is gone, seen after a call was cancelled inside a
    SQLite statement) is left behind with a warning, so the process exits
    instead of hanging in ``asyncio.run``'s teardown. Nothing committed is lost:
    a transaction cut short is rolled back by the database.
    """
    try:
        import uvloop
    except ImportError:
        loop = asyncio.new_event_loop()
    else:
        loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        try:
            _settle(loop, settle)
        finally:
            loop.close()


def _settle(loop: asyncio.AbstractEventLoop, within: float) -> None:
    """Cancel the loop's remaining tasks and wait at most ``within`` seconds for them."""
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        _, pending = loop.run_until_complete(asyncio.wait(tasks, timeout=within))
        if pending:
            names = ", ".join(sorted(t.get_name() for t in pending))
            log.warning(
                "%d task(s) did not end within %.0f s of stopping: %s", len(pending), within, names
            )
        for task in tasks - pending:
            if not task.cancelled() and task.exception() is not None:
                log.warning("a task failed while stopping: %r", task.exception())
    for closing in (loop.shutdown_asyncgens(), loop.shutdown_default_executor()):
        with contextlib.suppress(TimeoutError):
            loop.run_until_complete(asyncio.wait_for(closing, within))


async def _until_signal(runtime: Runtime, label: str) -> None:
    """Run ``runtime`` until SIGTERM/SIGINT (or a consumer loop dies), then stop it."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        async with runtime:
            # Everything built at start-up (app, bindings, converters, imports) lives
            # for the process: keep it out of the collector's generations, so a
            # full collection does not walk it (it stalled calls by tens of ms).
            gc.freeze()
            parts = []
            if runtime.gateway is not None:
                parts.append(f"serving on {runtime.gateway.address}")
            if runtime.connect is not None:
                parts.append(f"Connect and gRPC-Web on {runtime.connect.url}")
            if runtime.runner is not None:
                parts.append(f"consuming {', '.join(runtime.topics)} as {runtime.group}")
            if not parts and runtime.relay_worker is not None:
                parts.append("publishing its outbox")  # `wirebus relay`
            broker = (
                "Kafka"
                if runtime.settings.kafka_bootstrap
                else ("in-memory broker" if runtime.broker else "in-process events")
            )
            click.echo(
                f"wirebus {label}: {runtime.app.name} {'; '.join(parts)} ({broker})", err=True
            )
            waiter = asyncio.ensure_future(stop.wait())
            died = asyncio.ensure_future(runtime.wait())
            await asyncio.wait({waiter, died}, return_when=asyncio.FIRST_COMPLETED)
            for task in (waiter, died):
                task.cancel()
            click.echo(f"wirebus {label}: stopping", err=True)
    except WirebusError as exc:
        raise click.ClickException(_startup_error(label, exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot start: {exc}") from None


def _startup_error(label: str, exc: WirebusError) -> str:
    """One line for a failed start; a publisher that could not connect names the command,
    not a topic (it said "publishing to '*' failed" when `consume` found Kafka down)."""
    if isinstance(exc, PublishError) and exc.topic == "*":
        return f"cannot {label}: Kafka is unreachable: {exc.reason}"
    return _one_line(exc)


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None


def _start(start_at: str) -> Literal["earliest", "latest"]:
    return "latest" if start_at == "latest" else "earliest"


def _routers(slices: tuple[str, ...]) -> frozenset[str] | None:
    return frozenset(slices) if slices else None


_target = click.argument("target", metavar="MODULE:ATTR")
_app_dir = click.option(
    "--app-dir", default=".", show_default=True, help="Directory added to sys.path before import."
)
_host = click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
_port = click.option(
    "--port", default=50051, show_default=True, type=click.IntRange(0, 65535),
    help="Port of the gRPC gateway (0: a free one).",
)  # fmt: skip
_grace = click.option(
    "--grace",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds in-flight calls may take to finish on shutdown.",
)
_max_calls = click.option(
    "--max-concurrent-calls", "max_calls", type=click.IntRange(min=1), default=None,
    help="Calls in flight at most; one more gets RESOURCE_EXHAUSTED at once [default: no bound].",
)  # fmt: skip
_reflection = click.option(
    "--reflection/--no-reflection", default=True, show_default=True,
    help="Serve gRPC server reflection (the served services' schemas).",
)  # fmt: skip


def _tls(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--tls-cert``, ``--tls-key`` and ``--client-ca`` (PEM files)."""
    options = [
        click.option("--tls-cert", type=click.Path(dir_okay=False), default=None,
                     help="Serve TLS with this certificate chain (PEM); needs --tls-key."),
        click.option("--tls-key", type=click.Path(dir_okay=False), default=None,
                     help="The private key of --tls-cert (PEM)."),
        click.option("--client-ca", type=click.Path(dir_okay=False), default=None,
                     help="Require client certificates signed by this CA (mutual TLS)."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def _tls_config(tls_cert: str | None, tls_key: str | None, client_ca: str | None) -> Any:
    from .gateway.tls import TLSConfig

    if tls_cert is None and tls_key is None:
        if client_ca is not None:
            raise click.UsageError("--client-ca needs --tls-cert and --tls-key")
        return None
    if tls_cert is None or tls_key is None:
        raise click.UsageError("--tls-cert and --tls-key go together")
    return TLSConfig(tls_cert, tls_key, client_ca_file=client_ca)


_slices = click.option(
    "--slice", "slices", multiple=True,
    help="Only consume for the event handlers of this router (repeatable).",
)  # fmt: skip
_relay = click.option(
    "--relay/--no-relay", default=True, show_default=True,
    help="Publish the outbox from this process (else run `wirebus relay` separately).",
)  # fmt: skip
_start_at = click.option(
    "--start-at", type=click.Choice(["earliest", "latest"]), default="earliest", show_default=True,
    help="Where a consumer group with no committed offsets starts reading.",
)  # fmt: skip
_metrics_port = click.option(
    "--metrics-port", type=click.IntRange(1, 65535), default=None,
    help="Serve Prometheus metrics on METRICS_HOST:PORT/metrics (needs wirebus[metrics]).",
)  # fmt: skip
_metrics_host = click.option(
    "--metrics-host", default="127.0.0.1", show_default=True,
    help="Interface of the metrics endpoint (0.0.0.0: scrapable from other hosts and pods).",
)  # fmt: skip
_log_level = click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Least severe log records written (info: one wirebus.access line per call).",
)
_log_format = click.option(
    "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
    help="Log lines as text, or each as one JSON object (access lines with their fields).",
)  # fmt: skip


def _connect(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--connect-port`` and ``--cors-origin`` (the Connect/gRPC-Web port, issue 15)."""
    options = [
        click.option("--connect-port", type=click.IntRange(0, 65535), default=None,
                     help="Also serve Connect and gRPC-Web (browsers, curl) on this port"
                          " (needs wirebus[connect])."),
        click.option("--cors-origin", "cors_origins", multiple=True,
                     help="Browser origin allowed to call the Connect port, such as"
                          " http://localhost:5173, or '*' (repeatable)."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def _connect_config(
    host: str, port: int | None, cors_origins: tuple[str, ...], grace: float, max_calls: int | None
) -> Any:
    if port is None:
        if cors_origins:
            raise click.UsageError("--cors-origin needs --connect-port")
        return None
    if importlib.util.find_spec("uvicorn") is None:
        from .connect.server import MISSING_EXTRA

        raise click.ClickException(MISSING_EXTRA)
    from .connect import ConnectConfig

    try:
        return ConnectConfig(
            host=host, port=port, cors_origins=cors_origins, grace_seconds=grace,
            max_concurrent_calls=max_calls,
        )  # fmt: skip
    except ConfigurationError as exc:
        raise click.ClickException(_one_line(exc)) from None


def _keepalive(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--keepalive-time`` and ``--keepalive-timeout`` (seconds)."""
    options = [
        click.option("--keepalive-time", type=click.FloatRange(min=0.001), default=60.0,
                     show_default=True,
                     help="Seconds a connection may be idle before the server pings it."),
        click.option("--keepalive-timeout", type=click.FloatRange(min=0.001), default=20.0,
                     show_default=True,
                     help="Seconds to wait for the ping's answer before closing the connection."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


@click.group()
@click.version_option(package_name="wirebus")
def main() -> None:
    """wirebus: proto-first CQRS over gRPC and Kafka."""


@main.command()
@_target
@_app_dir
@_host
@_port
@_grace
@_max_calls
@_reflection
@_tls
@_keepalive
@_connect
@_log_level
@_log_format
@_relay
@_metrics_port
@_metrics_host
def serve(
    target: str, app_dir: str, host: str, port: int, grace: float, max_calls: int | None,
    reflection: bool, tls_cert: str | None, tls_key: str | None, client_ca: str | None,
    keepalive_time: float, keepalive_timeout: float,
    connect_port: int | None, cors_origins: tuple[str, ...],
    log_level: str, log_format: str, relay: bool, metrics_port: int | None, metrics_host: str,
) -> None:  # fmt: skip
    """Serve the app's gRPC gateway."""
    _logging(log_level, log_format)
    app = _checked(load_app(target, app_dir))
    tls = (tls_cert, tls_key, client_ca)
    keepalive = (keepalive_time, keepalive_timeout)
    config = _gateway_config(host, port, grace, max_calls, reflection, tls, keepalive)
    _check_port(host, port)
    connect = _connect_config(host, connect_port, cors_origins, grace, max_calls)
    settings = _settings()
    # Without Kafka the broker lives in this process: so must its consumers.
    try:
        runtime = Runtime(
            app, settings, gateway=config, connect=connect,
            consume=settings.kafka_bootstrap is None, relay=relay, metrics_port=metrics_port,
            metrics_host=metrics_host,
        )  # fmt: skip
    except ConfigurationError as exc:  # a feature whose extra is missing
        raise click.ClickException(_one_line(exc)) from None
    run_async(lambda: _until_signal(runtime, "serve"))


def _gateway_config(
    host: str,
    port: int,
    grace: float,
    max_calls: int | None,
    reflection: bool,
    tls: tuple[str | None, str | None, str | None] = (None, None, None),
    keepalive: tuple[float, float] = (60.0, 20.0),
) -> GatewayConfig:
    time_ms, timeout_ms = (max(1, round(seconds * 1000)) for seconds in keepalive)
    return GatewayConfig(
        host=host, port=port, grace_seconds=grace, max_concurrent_calls=max_calls,
        reflection=reflection, tls=_tls_config(*tls),
        keepalive_time_ms=time_ms, keepalive_timeout_ms=timeout_ms,
    )  # fmt: skip


def _check_port(host: str, port: int) -> None:
    """Fail with the gateway's one line if ``host:port`` cannot be bound, before grpc
    core tries (it writes its own ``E... add_port.cc] Failed to add port`` line first)."""
    if port == 0:
        return
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return  # grpc says what is wrong with the host
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as grpc binds
            with contextlib.suppress(OSError):
                probe.bind(address)
                return
    raise click.ClickException(
        f"cannot listen on {host}:{port}: the port is in use by another"
        " process, or the address is not this machine's (choose another with --port)"
    )


def _logging(level: str, log_format: str = "text") -> None:
    configure_logging(level, log_format)  # aiokafka quieter unless --log-level debug


@main.command()
@_target
@_app_dir
@_host
@_port
@_grace
@_max_calls
@_reflection
@_tls
@_keepalive
@_connect
@_log_level
@_log_format
@_slices
@_relay
@click.option(
    "--group", default=None, help="Consumer group of the consumers [default: the app's name]."
)
@_start_at
@_metrics_port
@_metrics_host
def run(
    target: str, app_dir: str, host: str, port: int, grace: float, max_calls: int | None,
    reflection: bool, tls_cert: str | None, tls_key: str | None, client_ca: str | None,
    keepalive_time: float, keepalive_timeout: float,
    connect_port: int | None, cors_origins: tuple[str, ...], log_level: str, log_format: str,
    slices: tuple[str, ...], relay: bool, group: str | None,
    start_at: str, metrics_port: int | None, metrics_host: str,
) -> None:  # fmt: skip
    """Run everything of the app in one process: gateway and event consumers.

    Events travel through Kafka when WIREBUS_KAFKA_BOOTSTRAP is set, through
    the embedded in-memory broker otherwise.
    """
    _logging(log_level, log_format)
    app = _checked(load_app(target, app_dir))
    tls = (tls_cert, tls_key, client_ca)
    keepalive = (keepalive_time, keepalive_timeout)
    config = _gateway_config(host, port, grace, max_calls, reflection, tls, keepalive)
    _check_port(host, port)
    connect = _connect_config(host, connect_port, cors_origins, grace, max_calls)
    try:
        runtime = Runtime(
            app, _settings(), gateway=config, connect=connect, consume=True,
            routers=_routers(slices), relay=relay, group=group, start_at=_start(start_at),
            metrics_port=metrics_port, metrics_host=metrics_host,
        )  # fmt: skip
    except ConfigurationError as exc:
        raise click.ClickException(_one_line(exc)) from None
    run_async(lambda: _until_signal(runtime, "run"))


@main.command()
@_target
@_app_dir
@click.option("--group", required=True, help="Kafka consumer group of this consumer.")
@_slices
@click.option(
    "--skip-unknown", is_flag=True, help="Skip unknown ce_type instead of dead-lettering."
)
@_log_level
@_log_format
@_relay
@_start_at
@_metrics_port
@_metrics_host
def consume(
    target: str, app_dir: str, group: str, slices: tuple[str, ...], skip_unknown: bool,
    log_level: str, log_format: str, relay: bool, start_at: str, metrics_port: int | None,
    metrics_host: str,
) -> None:  # fmt: skip
    """Run the app's event handlers on records from Kafka (needs WIREBUS_KAFKA_BOOTSTRAP)."""
    _logging(log_level, log_format)
    settings = _settings()
    if settings.kafka_bootstrap is None:
        raise click.ClickException("consume needs WIREBUS_KAFKA_BOOTSTRAP=host:port")
    app = _checked(load_app(target, app_dir))
    try:
        runtime = Runtime(
            app, settings, consume=True, group=group, routers=_routers(slices),
            skip_unknown=skip_unknown, relay=relay,
            start_at=_start(start_at), metrics_port=metrics_port, metrics_host=metrics_host,
        )  # fmt: skip
    except ConfigurationError as exc:
        raise click.ClickException(_one_line(exc)) from None
    if not runtime.topics:
        raise click.ClickException(f"{target} has no event handlers to consume for")
    run_async(lambda: _until_signal(runtime, "consume"))


@main.command()
@click.argument("name")
@click.option(
    "--dir", "directory", type=click.Path(file_okay=False), default=None,
    help="Where to write the project (new or empty) [default: ./NAME].",
)  # fmt: skip
def new(name: str, directory: str | None) -> None:
    """Write a minimal service NAME: a proto, buf templates, an app and its test."""
    from .new import create_project, missing_tools

    target = Path(directory if directory is not None else name)
    try:
        create_project(name, target)
    except ConfigurationError as exc:
        raise click.ClickException(_one_line(exc)) from None
    click.echo(f"wrote {target}/: proto/, buf.yaml, buf.gen.yaml, app.py, tests/, README.md")
    missing = missing_tools()
    if missing:
        click.echo(f"first: pip install 'wirebus[codegen,testing]' ({', '.join(missing)} missing)")
    click.echo(f"next: cd {target} && buf generate && pytest -q && wirebus run app:app")


@main.group()
def dlq() -> None:
    """Dead-letter topics: replay records to their original topic."""


@dlq.command("replay")
@click.option(
    "--log-level", default="warning", show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Least severe log records written (the report itself goes to stdout).",
)  # fmt: skip
@click.option("--topic", required=True, help="The dead-letter topic, e.g. shop.orders.v1.dlq.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Replay at most N records.")
@click.option(
    "--dry-run", is_flag=True, help="List what would be replayed; send and commit nothing."
)
@click.option("--force", is_flag=True, help="Replay a topic that has no .dlq suffix.")
def dlq_replay(log_level: str, topic: str, limit: int | None, dry_run: bool, force: bool) -> None:
    """Send DLQ records back to their original topic (needs WIREBUS_KAFKA_BOOTSTRAP).

    Replays the records from where the last replay stopped up to the topic's
    end when this one starts: records that fail again while it runs come back
    to the DLQ after that end and are not read again.
    """
    from .dlq import REPLAY_GROUP, check_dead_letter_topic, replay, summary

    _logging(log_level)  # aiokafka's lines as the other commands write them
    try:
        check_dead_letter_topic(topic, force=force)
    except ConfigurationError as exc:
        raise click.ClickException(_one_line(exc)) from None
    settings = _settings()
    if settings.kafka_bootstrap is None:
        raise click.ClickException("dlq replay needs WIREBUS_KAFKA_BOOTSTRAP=host:port")
    bootstrap = settings.kafka_bootstrap
    try:
        require_extra("kafka", "dlq replay")
    except ConfigurationError as exc:
        raise click.ClickException(_one_line(exc)) from None

    async def main() -> None:
        from .codec import EventRegistry
        from .kafka import KafkaConsumer, KafkaEventPublisher

        security = settings.kafka_security
        port = KafkaConsumer(
            bootstrap, group=REPLAY_GROUP, topics=[topic], create_topics=False, security=security
        )
        async with KafkaEventPublisher(
            bootstrap, EventRegistry(), source="wirebus-dlq", security=security
        ) as publisher:
            report = await replay(port, publisher, limit=limit, dry_run=dry_run)
        for line in summary(report, topic, dry_run=dry_run):
            click.echo(line)
        if report.failure is not None:
            raise click.ClickException(f"replay stopped: {report.failure}")

    try:
        run_async(main)
    except WirebusError as exc:
        raise click.ClickException(_startup_error("replay", exc)) from None


@main.command()
@_target
@_app_dir
@click.option("--mermaid", is_flag=True, help="Print a Mermaid flowchart of each saga instead.")
def describe(target: str, app_dir: str, mermaid: bool) -> None:
    """Print each RPC method with its handler and each event with its handlers."""
    app = load_app(target, app_dir)
    try:
        if mermaid:
            from .saga.describe import mermaid as chart

            app.check()
            click.echo("\n\n".join(chart(s) for s in app.sagas) or "%% no sagas")
            return
        click.echo(app.describe(database=True))  # as `wirebus run`/`serve` run it
    except ConfigurationError as exc:
        raise click.ClickException(_one_line(exc)) from None


@main.command("relay")
@_target
@_app_dir
@_log_level
@_metrics_port
@_metrics_host
def relay_command(
    target: str, app_dir: str, log_level: str, metrics_port: int | None, metrics_host: str
) -> None:
    """Publish the app's outbox to Kafka until stopped (several may run on PostgreSQL)."""
    _logging(log_level)
    settings = _settings()
    if settings.kafka_bootstrap is None:
        raise click.ClickException("relay needs WIREBUS_KAFKA_BOOTSTRAP=host:port")
    app = _checked(load_app(target, app_dir))
    try:
        runtime = Runtime(
            app, settings, relay=True, metrics_port=metrics_port, metrics_host=metrics_host
        )
    except ConfigurationError as exc:
        raise click.ClickException(_one_line(exc)) from None
    run_async(lambda: _until_signal(runtime, "relay"))


@main.group()
def db() -> None:
    """The database: schema management."""


@db.command("upgrade")
@_target
@_app_dir
def db_upgrade(target: str, app_dir: str) -> None:
    """Bring the schema (wirebus's and the app's tables) up to date."""
    app = _checked(load_app(target, app_dir))
    settings = _settings()

    async def main() -> None:
        from .migrations import upgrade

        applied = await upgrade(settings.database_url, app.metadata, app.migrations)
        click.echo(f"database {_safe_url(settings.database_url)}: {applied}")

    _run_db(main)


@main.group()
def outbox() -> None:
    """The transactional outbox: lag and failed rows."""


@outbox.command("status")
def outbox_status() -> None:
    """Pending and failed rows and the oldest pending row's age."""
    settings = _settings()

    async def main() -> None:
        from .outbox.relay import outbox_stats

        stats = await _on_database(settings, outbox_stats)
        oldest = stats.oldest_pending_seconds
        age = "-" if oldest is None else f"{oldest:.1f}s"
        click.echo(f"pending {stats.pending}  failed {stats.failed}  oldest pending {age}")

    _run_db(main)


@outbox.command("retry")
def outbox_retry() -> None:
    """Requeue every failed row for the relay."""
    settings = _settings()

    async def main() -> None:
        from .outbox.relay import retry_failed

        count = await _on_database(settings, retry_failed)
        click.echo(f"requeued {count} failed row(s)")

    _run_db(main)


async def _on_database(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    from .db import Database

    database = Database(settings.database_url)
    try:
        _require_file(database.sqlite_path, settings.database_url)
    except ConfigurationError:
        await database.close()
        raise
    try:
        return await work(database)
    finally:
        await database.close()


def _require_file(path: str | None, url: str) -> None:
    """A SQLite database that does not exist yet is not created by a command that only reads."""
    if path is not None and not Path(path).exists():
        raise ConfigurationError(
            f"no outbox database: {path} does not exist (WIREBUS_DATABASE_URL is"
            f" {_safe_url(url)}); `wirebus serve`, `run` or `db upgrade` creates it"
        )


def _run_db(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    try:
        run_async(main)
    except WirebusError as exc:
        raise click.ClickException(_one_line(exc)) from None
    except Exception as exc:  # the database refused: say so in one line, without SQL
        cause = getattr(exc, "orig", None) or exc
        reason = (str(cause).strip().splitlines() or [""])[0]
        if "no such table" in reason or "does not exist" in reason:
            raise click.ClickException(
                f"the database has no wirebus tables ({reason}): run `wirebus db upgrade APP`"
            ) from None
        raise click.ClickException(f"database error: {type(cause).__name__}: {reason}") from None


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _saga_commands() -> None:
    from .saga.cli import saga

    main.add_command(saga)


_saga_commands()
