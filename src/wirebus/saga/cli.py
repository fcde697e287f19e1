"""``wirebus saga``: list, show, retry and recover an app's sagas (on ``WIREBUS_DATABASE_URL``).

- ``wirebus saga list APP [--failed] [--type T]`` -- one line per saga, newest first;
- ``wirebus saga show APP ID`` -- its state and step history;
- ``wirebus saga retry APP ID`` -- a FAILED saga compensates again (in this process);
- ``wirebus saga recover APP`` -- resume interrupted sagas (what a runtime does at start-up).

Every command works through the app's own mediator on the database, so a
retried compensation's handlers and the messages it sends commit as they
do in the runtime (a running relay publishes them). Errors are one
``Error:`` line, as for every command.

Example::

    $ wirebus saga list examples.shop.app:app --failed
    3f2a...  checkout  o-17  failed  step 2  2026-01-02T03:04:05+00:00  compensating ...
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import click

from .state import SagaState, SagaStatus

if TYPE_CHECKING:
    from ..app import App
    from .engine import SagaEngine

__all__ = ["saga"]

T = TypeVar("T")


@click.group()
def saga() -> None:
    """Orchestrated sagas: list, show, retry, recover."""


_target = click.argument("target", metavar="MODULE:ATTR")
_app_dir = click.option(
    "--app-dir", default=".", show_default=True, help="Directory added to sys.path before import."
)


@saga.command("list")
@_target
@_app_dir
@click.option("--failed", is_flag=True, help="Only the failed ones (an operator must look).")
@click.option("--type", "saga_type", default=None, help="Only sagas of this type.")
@click.option(
    "--limit", default=100, show_default=True, type=click.IntRange(min=1),
    help="List this many sagas at most.",
)  # fmt: skip
def list_command(
    target: str, app_dir: str, failed: bool, saga_type: str | None, limit: int
) -> None:
    """One line per saga, newest first: id, type, key, status, step, last change, error."""
    status = SagaStatus.FAILED if failed else None

    async def work(engine: SagaEngine) -> None:
        found = await engine.list(status=status, saga_type=saga_type, limit=limit)
        for state in found:
            click.echo(_line(state))
        if not found:
            click.echo("no sagas" + (" failed" if failed else ""), err=True)

    _run(target, app_dir, work)


@saga.command("show")
@_target
@click.argument("saga_id")
@_app_dir
def show_command(target: str, saga_id: str, app_dir: str) -> None:
    """A saga's state and its step history."""

    async def work(engine: SagaEngine) -> None:
        state = await _existing(engine, saga_id)
        for line in describe_state(state):
            click.echo(line)

    _run(target, app_dir, work)


@saga.command("retry")
@_target
@click.argument("saga_id")
@_app_dir
def retry_command(target: str, saga_id: str, app_dir: str) -> None:
    """Compensate a FAILED saga again, from the step that kept failing."""

    async def work(engine: SagaEngine) -> None:
        state = await _existing(engine, saga_id)
        if not await engine.retry(saga_id):
            raise click.ClickException(
                f"saga {saga_id} is {state.status.value}, not failed: only a failed saga is retried"
            )
        after = await _existing(engine, saga_id)
        click.echo(f"saga {saga_id} retried: now {after.status.value}")

    _run(target, app_dir, work)


@saga.command("recover")
@_target
@_app_dir
def recover_command(target: str, app_dir: str) -> None:
    """Resume (or time out) every interrupted saga, as a runtime does when it starts."""

    async def work(engine: SagaEngine) -> None:
        count = await engine.recover()
        click.echo(f"recovered {count} saga(s)")

    _run(target, app_dir, work)


def describe_state(state: SagaState) -> list[str]:
    """``wirebus saga show``'s lines: the state, then one line per history entry."""
    lines = [
        f"saga {state.saga_id}",
        f"  type {state.saga_type}  key {state.key}",
        f"  status {state.status.value}  step {state.step}  attempts {state.attempts}"
        f"  version {state.version}",
        f"  created {state.created_at.isoformat()}  updated {state.updated_at.isoformat()}",
    ]
    if state.error:
        lines.append(f"  error {state.error}")
    lines.append(f"  data {state.data}")
    lines.append("history:")
    for record in state.history:
        detail = f"  {record.detail}" if record.detail else ""
        lines.append(
            f"  {record.at.isoformat()}  {record.step}  {record.phase}  {record.outcome}{detail}"
        )
    return lines


def _line(state: SagaState) -> str:
    error = f"  {state.error}" if state.error else ""
    return (
        f"{state.saga_id}  {state.saga_type}  {state.key}  {state.status.value}"
        f"  step {state.step}  {state.updated_at.isoformat()}{error}"
    )


async def _existing(engine: SagaEngine, saga_id: str) -> SagaState:
    state = await engine.get(saga_id)
    if state is None:
        raise click.ClickException(f"no saga {saga_id}")
    return state


def _run(target: str, app_dir: str, work: Callable[[SagaEngine], Awaitable[None]]) -> None:
    from ..cli import _checked, _run_db, _settings, load_app

    app = _checked(load_app(target, app_dir))
    if not app.sagas:
        raise click.ClickException(f"{target} has no sagas: App(sagas=[...]) declares them")
    url = _settings().database_url

    refused: list[click.ClickException] = []

    async def main() -> None:
        async with _engine(app, url) as engine:
            try:
                await work(engine)
            except click.ClickException as exc:  # ours: not a database error
                refused.append(exc)

    _run_db(main)
    if refused:
        raise refused[0]


@contextlib.asynccontextmanager
async def _engine(app: App, url: str) -> AsyncIterator[SagaEngine]:
    from ..cli import _require_file
    from ..db import Database

    database = Database(url, extra_metadata=[app.metadata] if app.metadata is not None else [])
    try:
        _require_file(database.sqlite_path, url)
    except BaseException:
        await database.close()
        raise
    async with app.mediator(database=database) as mediator:
        yield app.saga_engine(mediator)
