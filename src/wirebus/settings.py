"""``Settings``: what the command line reads from the environment, once.

Nothing in the library reads the environment at import time; the CLI calls
:meth:`Settings.from_env` when a command starts and passes the values on.

- ``WIREBUS_KAFKA_BOOTSTRAP`` (``host:port[,host:port]``): publish events to,
  and consume them from, this Kafka cluster. Unset: the embedded in-memory
  broker (``wirebus run``) or in-process events (``wirebus serve``).
- ``WIREBUS_DATABASE_URL`` (SQLAlchemy async URL, e.g.
  ``postgresql+asyncpg://user:pw@host/db``): where consumers keep the inbox.
  Unset: ``sqlite+aiosqlite:///wirebus.db`` in the working directory (part of
  every install); PostgreSQL needs the ``postgres`` extra (asyncpg), and a
  ``postgresql+asyncpg://`` URL without it is one error naming the extra.
  PostgreSQL over TLS: the URL's ``?ssl=`` (asyncpg: ``require``,
  ``verify-full``, ...), e.g. ``postgresql+asyncpg://u:pw@db/shop?ssl=verify-full``
  (``PGSSLROOTCERT``/``PGSSLCERT``/``PGSSLKEY`` name the CA and client files).
- ``WIREBUS_KAFKA_SECURITY_PROTOCOL``, ``WIREBUS_KAFKA_SSL_*``,
  ``WIREBUS_KAFKA_SASL_*``: TLS and SASL for every Kafka client (see
  :mod:`wirebus.kafka_security`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from .errors import ConfigurationError
from .extras import require_extra
from .kafka_security import PLAINTEXT, KafkaSecurity

__all__ = ["DEFAULT_DATABASE_URL", "Settings"]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///wirebus.db"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Deployment settings of one process."""

    kafka_bootstrap: str | None = None
    database_url: str = DEFAULT_DATABASE_URL
    kafka_security: KafkaSecurity = PLAINTEXT

    def __post_init__(self) -> None:
        if self.kafka_bootstrap is not None:
            for server in self.kafka_bootstrap.split(","):
                host, sep, port = server.strip().rpartition(":")
                if not sep or not host or not port.isdigit():
                    raise ConfigurationError(
                        f"WIREBUS_KAFKA_BOOTSTRAP: {server!r} is not host:port"
                    )
        if self.database_url.startswith("postgresql+asyncpg:"):
            require_extra("postgres", "WIREBUS_DATABASE_URL=postgresql+asyncpg://...")
        if not _is_async_url(self.database_url):
            raise ConfigurationError(
                f"WIREBUS_DATABASE_URL must name an async driver (sqlite+aiosqlite://,"
                f" postgresql+asyncpg://), not {self.database_url!r}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the ``WIREBUS_*`` variables (``os.environ`` by default)."""
        env = os.environ if environ is None else environ
        return cls(
            kafka_bootstrap=env.get("WIREBUS_KAFKA_BOOTSTRAP") or None,
            database_url=env.get("WIREBUS_DATABASE_URL") or DEFAULT_DATABASE_URL,
            kafka_security=KafkaSecurity.from_env(env),
        )


def _is_async_url(url: str) -> bool:
    from sqlalchemy.engine import make_url

    try:
        return bool(make_url(url).get_dialect().is_async)
    except Exception:  # unparsable, or a dialect/driver that is not installed
        return False
