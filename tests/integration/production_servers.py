"""The servers around the production example's subprocess, all on 127.0.0.1.

``Files.make(dir)``: a trustme CA and the PEM files it signed (a certificate for
127.0.0.1/localhost, used by the gateway, the JWKS server and the collector, and
a client's). ``Issuer``: an RSA key, its JWKS and JWTs it signs. ``JwksServer``:
the JWKS over HTTPS. ``Collector``: a fake OTLP/gRPC trace collector over TLS
keeping every span it is sent.

Example::

    files, issuer = Files.make(tmp_path), Issuer()
    jwks = JwksServer(issuer.jwks(), files)
    url = jwks.start()          # https://127.0.0.1:PORT/.well-known/jwks.json
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import ssl
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import jwt
import trustme
from cryptography.hazmat.primitives.asymmetric import rsa
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

ISSUER = "https://id.example.com/"  # the README's: tokens are checked against it
AUDIENCE = "shop"
KEY_ID = "prod-test-1"


@dataclasses.dataclass(frozen=True)
class Files:
    """PEM files of the test's CA and the certificates it signed."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def make(cls, directory: Path) -> Files:
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        client = ca.issue_cert("shop-client@wirebus.test")
        files = cls(*(directory / n for n in ("ca.pem", "server.pem", "server.key",
                                                "client.pem", "client.key")))  # fmt: skip
        ca.cert_pem.write_to_path(str(files.ca))
        server.cert_chain_pems[0].write_to_path(str(files.server_cert))
        server.private_key_pem.write_to_path(str(files.server_key))
        client.cert_chain_pems[0].write_to_path(str(files.client_cert))
        client.private_key_pem.write_to_path(str(files.client_key))
        return files

    def client(self, *, certificate: bool = True) -> grpc.ChannelCredentials:
        if not certificate:
            return grpc.ssl_channel_credentials(root_certificates=self.ca.read_bytes())
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(),
            private_key=self.client_key.read_bytes(),
            certificate_chain=self.client_cert.read_bytes(),
        )


class Issuer:
    """An RSA key: JWTs signed with it, and the JWKS that publishes it."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> bytes:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return json.dumps({"keys": [{**jwk, "kid": KEY_ID, "alg": "RS256", "use": "sig"}]}).encode()

    def token(self, *, scope: str = "orders:read", expires_in: float = 300) -> str:
        now = int(time.time())
        claims = {"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "iat": now,
                  "exp": now + int(expires_in), "scope": scope}  # fmt: skip
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": KEY_ID})


@dataclasses.dataclass
class JwksServer:
    """An HTTPS server on 127.0.0.1 answering ``GET /.well-known/jwks.json``."""

    body: bytes
    files: Files
    gets: int = 0

    def start(self) -> str:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                found = self.path == "/.well-known/jwks.json"
                owner.gets += found
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(owner.body if found else b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass  # not the test's output

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.files.server_cert, self.files.server_key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"https://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """A fake OTLP/gRPC trace collector over TLS: keeps every span it is sent."""

    def __init__(self, files: Files) -> None:
        self.spans: list[trace_pb2.Span] = []
        self._lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)
        credentials = grpc.ssl_server_credentials(
            [(files.server_key.read_bytes(), files.server_cert.read_bytes())]
        )
        self.port = self.server.add_secure_port("127.0.0.1:0", credentials)

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        with self._lock:
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    self.spans.extend(scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def server_span(self, trace_id: str) -> trace_pb2.Span | None:
        with self._lock:
            for span in self.spans:
                if span.trace_id.hex() == trace_id and span.kind == trace_pb2.Span.SPAN_KIND_SERVER:
                    return span
        return None
