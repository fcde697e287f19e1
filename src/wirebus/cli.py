"""The ``wirebus`` command line.

- ``wirebus serve MODULE:ATTR`` serves the app's gateway;
- ``wirebus run MODULE:ATTR`` runs everything of the app in one process on
  embedded defaults (today: the gateway with in-process event handlers);
- ``wirebus describe MODULE:ATTR`` prints methods and events with their handlers.

A bad module path or a wiring error prints one ``error:`` line and exits 2;
SIGTERM or Ctrl-C stops the gateway gracefully.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import click

from .app import App
from .errors import ConfigurationError, WirebusError
from .gateway import Gateway, GatewayConfig

__all__ = ["load_app", "main"]

log = logging.getLogger(__name__)


def load_app(target: str, app_dir: str = ".") -> App:
    """Import ``module.path:attribute`` and return the ``App`` it names."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise click.UsageError(
            f"expected MODULE:ATTR such as examples.shop.app:app, got {target!r}"
        )
    path = str(Path(app_dir).resolve())
    if path not in sys.path:
        sys.path.insert(0, path)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
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


def _one_line(exc: BaseException) -> str:
    lines = [line.strip(" -") for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines)


def _checked(app: App) -> App:
    try:
        app.check()
    except ConfigurationError as exc:
        raise click.ClickException(_one_line(exc)) from None
    return app


def _run_async(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run on uvloop when it is installed (``pip install 'wirebus[uvloop]'``)."""
    try:
        import uvloop
    except ImportError:
        factory = None
    else:
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())


async def _serve(app: App, config: GatewayConfig, label: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        async with Gateway(app, config) as gateway:
            click.echo(f"wirebus {label}: {app.name} serving on {gateway.address}", err=True)
            await stop.wait()
            click.echo(f"wirebus {label}: stopping (grace {config.grace_seconds:g}s)", err=True)
    except ConfigurationError as exc:
        raise click.ClickException(_one_line(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot serve on {config.host}:{config.port}: {exc}") from None


_target = click.argument("target", metavar="MODULE:ATTR")
_app_dir = click.option(
    "--app-dir", default=".", show_default=True, help="Directory added to sys.path before import."
)
_host = click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
_port = click.option("--port", default=50051, show_default=True, type=click.IntRange(0, 65535))
_grace = click.option(
    "--grace",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds in-flight calls may take to finish on shutdown.",
)
_log_level = click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)


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
@_log_level
def serve(target: str, app_dir: str, host: str, port: int, grace: float, log_level: str) -> None:
    """Serve the app's gRPC gateway."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    app = _checked(load_app(target, app_dir))
    config = GatewayConfig(host=host, port=port, grace_seconds=grace)
    _run_async(lambda: _serve(app, config, "serve"))


@main.command()
@_target
@_app_dir
@_host
@_port
@_grace
@_log_level
def run(target: str, app_dir: str, host: str, port: int, grace: float, log_level: str) -> None:
    """Run everything of the app in one process on embedded defaults."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    app = _checked(load_app(target, app_dir))
    config = GatewayConfig(host=host, port=port, grace_seconds=grace)
    _run_async(lambda: _serve(app, config, "run"))


@main.command()
@_target
@_app_dir
def describe(target: str, app_dir: str) -> None:
    """Print each RPC method with its handler and each event with its handlers."""
    app = load_app(target, app_dir)
    try:
        click.echo(app.describe())
    except ConfigurationError as exc:
        raise click.ClickException(_one_line(exc)) from None
