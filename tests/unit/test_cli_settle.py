"""A command exits when its work has ended, even if a task will not stop.

After a call was cancelled inside a SQLite statement, SQLAlchemy's shielded
close of the connection waited for aiosqlite's worker thread, which was gone:
``asyncio.run``'s teardown waited for that task for ever and ``wirebus serve``
never exited after SIGTERM. The CLI's runner gives leftover tasks a bounded
time, then leaves them with a warning.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from wirebus.cli import run_async


async def _main_leaving_a_stubborn_task() -> None:
    async def stubborn() -> None:
        while True:  # swallows every cancellation, like a close waiting on a dead thread
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue

    asyncio.get_running_loop().create_task(stubborn(), name="stubborn close")
    await asyncio.sleep(0)


def test_a_task_that_never_ends_does_not_keep_the_command_from_exiting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    finished = threading.Event()

    def run() -> None:
        run_async(_main_leaving_a_stubborn_task, settle=0.2)
        finished.set()

    with caplog.at_level(logging.WARNING, logger="wirebus.cli"):
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(timeout=30)

    assert finished.is_set(), "the runner waited for the stubborn task"
    assert "1 task(s) did not end within 0 s of stopping: stubborn close" in caplog.text


def test_tasks_that_end_when_cancelled_end_quietly(caplog: pytest.LogCaptureFixture) -> None:
    ended: list[str] = []

    async def main() -> None:
        async def polite() -> None:
            try:
                await asyncio.sleep(3600)
            finally:
                ended.append("polite")

        asyncio.get_running_loop().create_task(polite())
        await asyncio.sleep(0)

    with caplog.at_level(logging.WARNING, logger="wirebus.cli"):
        run_async(main, settle=5.0)

    assert ended == ["polite"]
    assert caplog.text == ""
