"""``wirebus saga list/show/retry/recover`` and ``describe --mermaid`` on a SQLite file."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.unit import _saga_cli_app as bookings
from wirebus.cli import main
from wirebus.db import Database

APP = "tests.unit._saga_cli_app:app"


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite+aiosqlite:///{tmp_path}/sagas.db"
    monkeypatch.setenv("WIREBUS_DATABASE_URL", url)
    bookings.BROKEN["compensation"] = True
    yield url
    bookings.BROKEN["compensation"] = True


def book(url: str, booking_id: str) -> str:
    """Start a booking on the database at ``url`` (it fails, then its compensation does)."""

    async def run() -> str:
        database = Database(url, schema="create")
        async with bookings.app.mediator(database=database) as mediator:
            saga_id: str = await mediator.send(bookings.Book(booking_id=booking_id))
            return saga_id

    return asyncio.run(run())


def wirebus(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def test_list_failed_shows_the_saga_whose_compensation_kept_failing(url: str) -> None:
    saga_id = book(url, "b-1")

    result = wirebus("saga", "list", APP, "--failed")

    assert result.exit_code == 0, result.output
    [line] = result.output.splitlines()
    assert line.startswith(f"{saga_id}  booking  b-1  failed  step 0  ")
    assert "the reservation service is down" in line


def test_show_prints_the_state_and_each_step_of_its_history(url: str) -> None:
    saga_id = book(url, "b-2")

    result = wirebus("saga", "show", APP, saga_id)

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"saga {saga_id}"
    assert "  status failed  step 0  attempts 1  version 4" in lines
    history = lines[lines.index("history:") + 1 :]
    assert [line.split()[1:4] for line in history] == [
        ["reserve", "action", "succeeded"],
        ["pay", "action", "failed"],
        ["reserve", "compensation", "failed"],
    ]
    assert history[1].endswith("pay: RuntimeError: card refused")


def test_retry_compensates_a_failed_saga_again(url: str) -> None:
    saga_id = book(url, "b-3")
    bookings.BROKEN["compensation"] = False  # the reservation service is back

    result = wirebus("saga", "retry", APP, saga_id)

    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"saga {saga_id} retried: now compensated"
    assert wirebus("saga", "list", APP, "--failed").output == "no sagas failed\n"
    again = wirebus("saga", "retry", APP, saga_id)
    assert again.exit_code == 1
    assert again.output.strip() == (
        f"Error: saga {saga_id} is compensated, not failed: only a failed saga is retried"
    )


def test_show_of_an_unknown_saga_is_one_error_line(url: str) -> None:
    book(url, "b-4")

    result = wirebus("saga", "show", APP, "nope")

    assert result.exit_code == 1
    assert result.output == "Error: no saga nope\n"


def test_recover_with_nothing_interrupted_recovers_nothing(url: str) -> None:
    book(url, "b-5")  # failed: final, nothing to resume

    result = wirebus("saga", "recover", APP)

    assert (result.exit_code, result.output) == (0, "recovered 0 saga(s)\n")


def test_describe_mermaid_draws_steps_forwards_and_compensations_backwards() -> None:
    result = wirebus("describe", "--mermaid", "examples.shop.app:app")

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "flowchart LR"
    assert '  start(["checkout: OrderPlaced"]) --> s0' in lines
    assert "  s2 -->|PaymentCaptured| s3" in lines
    assert "  s2 -.->|PaymentDeclined / timeout 30s| c1" in lines  # release the stock
    assert '  c1[/"release_stock<br/>undoes reserve stock"/]' in lines
    assert "  c1 --> c0" in lines  # then cancel the order
    assert "  c0 --> compensated" in lines


def test_describe_lists_each_saga_with_its_steps_and_compensations() -> None:
    result = wirebus("describe", "examples.shop.app:app")

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    saga = lines.index("sagas:")
    assert lines[saga + 1 : saga + 6] == [
        "  checkout (key order_id; started by OrderPlaced)",
        "    1. accept order: in-process; compensated by cancel_order",
        "    2. reserve stock: in-process; compensated by release_stock",
        "    3. capture payment: sends, waits for PaymentCaptured=fn, PaymentDeclined=fail"
        " (timeout 30s)",
        "    4. confirm order: in-process",
    ]
