"""What the Connect port tells the pipeline of a call: its CallInfo and its deadline.

The stages that read :class:`~wirebus.context.CallInfo` (authentication,
correlation, tracing, handlers) see an HTTP call as they see a gRPC one:
``metadata`` is the request headers, keys lower case, the first value of
each, values of ``-bin`` keys base64-decoded to bytes; ``peer`` is
``ipv4:127.0.0.1:53211`` (``ipv6:[::1]:53211``) as grpc writes it; the
deadline comes from ``connect-timeout-ms`` (Connect) or ``grpc-timeout``
(gRPC-Web). The CallInfo is built only when something asks for it.

Example::

    timeout = timeout_of(headers, "connect")
    token = bind_call(call_info_factory("/shop.v1.Orders/Get", scope, headers, timeout))
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

import grpc

from ..context import CallInfo
from ..gateway.errors import status_of
from .endpoints import Failed
from .protocol import connect_timeout, grpc_timeout

__all__ = ["call_info_factory", "peer_of", "timeout_of"]

# Headers of the HTTP exchange itself, not call metadata (grpc leaves these out too).
_TRANSPORT = frozenset(
    {
        b"host",
        b"content-type",
        b"content-length",
        b"content-encoding",
        b"accept-encoding",
        b"connection",
        b"transfer-encoding",
        b"te",
        b"user-agent",
        b"connect-protocol-version",
        b"connect-timeout-ms",
        b"connect-content-encoding",
        b"connect-accept-encoding",
        b"grpc-timeout",
        b"grpc-encoding",
        b"grpc-accept-encoding",
    }
)


def timeout_of(headers: Mapping[bytes, bytes], protocol: str) -> float | None:
    """Seconds the caller gave the call, ``None`` for no deadline (``Failed``: a bad header)."""
    try:
        if protocol == "grpc-web":
            return grpc_timeout(headers.get(b"grpc-timeout"))
        return connect_timeout(headers.get(b"connect-timeout-ms"))
    except ValueError as exc:
        raise Failed(status_of(grpc.StatusCode.INVALID_ARGUMENT, str(exc))) from None


def call_info_factory(
    path: str,
    scope: MutableMapping[str, Any],
    headers: Mapping[bytes, bytes],
    timeout: float | None,
) -> Callable[[], CallInfo]:
    """A factory of the call's :class:`CallInfo` (the deadline fixed now, the rest on demand)."""
    deadline = None if timeout is None else time.monotonic() + timeout

    def build() -> CallInfo:
        return CallInfo(
            method=path,
            peer=peer_of(scope.get("client")),
            metadata=_metadata(headers),
            deadline=deadline,
        )

    return build


def peer_of(client: Any) -> str:
    """An ASGI ``client`` (host, port) as grpc writes a peer: ``ipv4:127.0.0.1:53211``."""
    if not client:
        return "unknown"
    host, port = client[0], client[1]
    if ":" in host:
        return f"ipv6:[{host}]:{port}"
    return f"ipv4:{host}:{port}"


def _metadata(headers: Mapping[bytes, bytes]) -> dict[str, str | bytes]:
    metadata: dict[str, str | bytes] = {}
    for key, value in headers.items():
        if key in _TRANSPORT:
            continue
        name = key.decode("latin-1")
        if name.endswith("-bin"):
            try:
                metadata[name] = base64.b64decode(value + b"=" * (-len(value) % 4))
            except (binascii.Error, ValueError):
                continue
        else:
            metadata[name] = value.decode("latin-1")
    return metadata
