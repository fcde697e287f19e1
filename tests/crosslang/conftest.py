"""Fixtures of the cross-language suite: the real Kafka of ``scripts/services``."""

from tests.integration.conftest import services  # noqa: F401  (session fixture, re-exported)
