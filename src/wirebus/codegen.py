"""``protoc-gen-grpc_python``: a protoc plugin that writes gRPC Python stubs.

buf has no builtin for gRPC Python stubs and remote plugins are not an option
offline, so this plugin wraps grpcio-tools: it writes the request's
descriptors to a temporary ``FileDescriptorSet`` and runs grpc_tools' protoc
with ``--descriptor_set_in`` and ``--grpc_python_out``.

Example ``buf.gen.yaml`` entry::

    - local: protoc-gen-grpc_python
      out: gen/python

Needs the ``codegen`` extra (``pip install 'wirebus[codegen]'``).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2

__all__ = ["generate", "main"]


def generate(request: plugin_pb2.CodeGeneratorRequest) -> plugin_pb2.CodeGeneratorResponse:
    """Run grpc_tools over ``request`` and return the generated files."""
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    )
    try:
        from grpc_tools import protoc
    except ImportError:  # pragma: no cover - depends on the environment
        response.error = "grpcio-tools is not installed: pip install 'wirebus[codegen]'"
        return response
    descriptors = descriptor_pb2.FileDescriptorSet(file=request.proto_file)
    with tempfile.TemporaryDirectory(prefix="wirebus-codegen-") as tmp:
        root = Path(tmp)
        descriptor_path = root / "descriptors.pb"
        descriptor_path.write_bytes(descriptors.SerializeToString())
        out = root / "out"
        out.mkdir()
        option = f"{request.parameter}:" if request.parameter else ""
        args = [
            "grpc_tools.protoc",
            f"--descriptor_set_in={descriptor_path}",
            f"--grpc_python_out={option}{out}",
            *request.file_to_generate,
        ]
        if protoc.main(args) != 0:
            response.error = f"grpc_tools.protoc failed for {list(request.file_to_generate)}"
            return response
        for path in sorted(out.rglob("*.py")):
            response.file.add(name=path.relative_to(out).as_posix(), content=path.read_text())
    return response


def main() -> None:
    """Entry point: read a ``CodeGeneratorRequest`` on stdin, answer on stdout."""
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    sys.stdout.buffer.write(generate(request).SerializeToString())
