"""CORS for browser origins: preflight answers and the headers of every response.

A browser calls the Connect port from a page of another origin only when
the port says it may: ``Cors(origins=("https://shop.example",))`` answers
the preflight (``OPTIONS``) of those origins, and every response to them
names the origin and exposes the headers Connect and gRPC-Web clients read
(``Grpc-Status``, ``Grpc-Message``, ``Grpc-Status-Details-Bin``,
``Connect-Protocol-Version``, ...). ``"*"`` allows every origin. Everything
is precomputed; a request without an ``Origin`` header costs one lookup.

Example::

    cors = Cors(origins=("http://localhost:5173",))
    cors.headers(b"http://localhost:5173")   # [(b"access-control-allow-origin", ...), ...]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ..errors import ConfigurationError

__all__ = ["Cors"]

Headers = list[tuple[bytes, bytes]]

ALLOWED_HEADERS = (
    "Content-Type, Content-Encoding, Accept-Encoding, Connect-Protocol-Version,"
    " Connect-Timeout-Ms, Connect-Content-Encoding, Connect-Accept-Encoding, Grpc-Timeout,"
    " X-Grpc-Web, X-User-Agent, Authorization, Traceparent, Tracestate, X-Correlation-Id"
)
EXPOSED_HEADERS = (
    "Grpc-Status, Grpc-Message, Grpc-Status-Details-Bin, Connect-Protocol-Version,"
    " Content-Encoding, Connect-Content-Encoding"
)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Cors:
    """The browser origins allowed to call (``"*"``: any), and how long a preflight holds.

    ``extra_headers`` are request headers a page may send besides
    ``ALLOWED_HEADERS`` (an app's own ``x-tenant``).

    Example::

        Cors(origins=("https://shop.example", "http://localhost:5173"), max_age=600)
    """

    origins: Sequence[str]
    max_age: int = 7200
    extra_headers: Sequence[str] = ()
    _allowed: frozenset[bytes] = dataclasses.field(init=False, repr=False)
    _preflight: Headers = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        for origin in self.origins:
            if origin != "*" and "://" not in origin:
                raise ConfigurationError(
                    f"a CORS origin is scheme://host[:port] or '*', not {origin!r}"
                )
        if self.max_age < 0:
            raise ConfigurationError(f"max_age must be >= 0 seconds, not {self.max_age}")
        allowed = frozenset(o.rstrip("/").encode() for o in self.origins)
        object.__setattr__(self, "_allowed", allowed)
        request_headers = ", ".join((ALLOWED_HEADERS, *self.extra_headers))
        object.__setattr__(
            self,
            "_preflight",
            [
                (b"access-control-allow-methods", b"POST, GET, OPTIONS"),
                (b"access-control-allow-headers", request_headers.encode()),
                (b"access-control-max-age", str(self.max_age).encode()),
            ],
        )

    def allows(self, origin: bytes) -> bool:
        """Whether a page of ``origin`` may call."""
        return b"*" in self._allowed or origin in self._allowed

    def headers(self, origin: bytes | None) -> Headers:
        """The CORS headers of a response to ``origin`` (none when it is not allowed)."""
        if origin is None or not self.allows(origin):
            return []
        return [
            (b"access-control-allow-origin", origin),
            (b"vary", b"Origin"),
            (b"access-control-expose-headers", EXPOSED_HEADERS.encode()),
        ]

    def preflight(self, origin: bytes | None) -> Headers | None:
        """The headers of a preflight answer, or ``None`` when ``origin`` may not call."""
        if origin is None or not self.allows(origin):
            return None
        return [(b"access-control-allow-origin", origin), (b"vary", b"Origin"), *self._preflight]
