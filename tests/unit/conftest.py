"""The unit tier: in-memory only, whatever the shell exports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from wirebus import App, Mediator


@pytest.fixture(autouse=True)
def _no_deployment_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """``WIREBUS_*`` settings are for the integration tier; unit tests never see them."""
    for name in ("WIREBUS_KAFKA_BOOTSTRAP", "WIREBUS_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
async def _close_mediators(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """Every mediator a test builds is closed at teardown (its database with it)."""
    created: list[Mediator] = []
    build = App.mediator

    def tracking(self: App, **kwargs: Any) -> Mediator:
        mediator = build(self, **kwargs)
        created.append(mediator)
        return mediator

    monkeypatch.setattr(App, "mediator", tracking)
    yield
    for mediator in created:
        await mediator.close()
