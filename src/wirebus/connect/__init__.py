"""The Connect port: the app's services over Connect (binary, JSON) and gRPC-Web, on ASGI.

The same routes, pipeline and error mapping as the gRPC gateway, served by
an ASGI app of our own (``app.py``) on uvicorn (``server.py``). Needs the
``connect`` extra for the server; the ASGI app itself needs nothing more.

Example::

    async with ConnectServer(app, ConnectConfig(port=8080)) as server:
        print(server.url)   # curl -H 'content-type: application/json' -d '{}' $url/pkg.Svc/Method
"""

from __future__ import annotations

from .app import ConnectApp
from .cors import Cors
from .server import ConnectConfig, ConnectServer

__all__ = ["ConnectApp", "ConnectConfig", "ConnectServer", "Cors"]
