"""Crash and fault tests of the transactional outbox: real Kafka and PostgreSQL."""

from tests.integration.conftest import bootstrap, database_url, fresh, services  # noqa: F401
