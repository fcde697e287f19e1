"""The unit tier: in-memory only, whatever the shell exports."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_deployment_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """``WIREBUS_*`` settings are for the integration tier; unit tests never see them."""
    for name in ("WIREBUS_KAFKA_BOOTSTRAP", "WIREBUS_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
