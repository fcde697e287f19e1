"""The gRPC gateway: serves an app's services from their descriptors."""

from __future__ import annotations

from .server import Gateway, GatewayConfig

__all__ = ["Gateway", "GatewayConfig"]
