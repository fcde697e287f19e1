"""Optional features and the extra that installs each: one clear error when it is missing.

``pip install wirebus`` serves an app on the embedded defaults (gateway,
SQLite outbox and inbox, in-memory broker). Everything else is an extra:

=============  ==========================================  ==========================
extra          enables                                     modules
=============  ==========================================  ==========================
``kafka``      ``WIREBUS_KAFKA_BOOTSTRAP``, ``consume``,   aiokafka, murmurhash2
               ``relay``, ``dlq replay``
``postgres``   ``WIREBUS_DATABASE_URL=postgresql+asyncpg``  asyncpg
``metrics``    ``--metrics-port``                          prometheus_client
``codegen``    ``buf generate`` (grpcio-tools, buf)        grpc_tools
``breaker``    ``CircuitBreaker``                          purgatory
``connect``    ``--connect-port`` (Connect, gRPC-Web)      uvicorn, httptools
=============  ==========================================  ==========================

A feature asked for without its extra fails before anything starts, with one
:class:`~wirebus.errors.ConfigurationError` naming the extra, instead of an
``ImportError`` traceback from deep inside the runtime.

Example::

    require_extra("metrics", "serving metrics (--metrics-port)")
    # ConfigurationError: serving metrics (--metrics-port) needs the metrics extra
    # (prometheus_client is not installed): pip install 'wirebus[metrics]'
"""

from __future__ import annotations

import importlib.util

from .errors import ConfigurationError

__all__ = ["EXTRAS", "missing_modules", "require_extra"]

EXTRAS: dict[str, tuple[str, ...]] = {
    "kafka": ("aiokafka",),
    "postgres": ("asyncpg",),
    "metrics": ("prometheus_client",),
    "codegen": ("grpc_tools",),
    "breaker": ("purgatory",),
    "connect": ("uvicorn", "httptools"),
}
"""The modules each extra installs that wirebus imports (murmurhash2 is optional: a
pure-Python murmur2 stands in)."""


def missing_modules(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here (none: the extra is installed)."""
    return [name for name in EXTRAS[extra] if not _importable(name)]


def require_extra(extra: str, feature: str) -> None:
    """Raise :class:`ConfigurationError` naming ``extra`` when ``feature`` cannot work here.

    Example::

        require_extra("kafka", "WIREBUS_KAFKA_BOOTSTRAP")
    """
    missing = missing_modules(extra)
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise ConfigurationError(
            f"{feature} needs the {extra} extra ({', '.join(missing)} {verb} not installed):"
            f" pip install 'wirebus[{extra}]'"
        )


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
