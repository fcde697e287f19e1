"""Server reflection over the served services' files only (``v1`` and ``v1alpha``).

grpcio-reflection answers from the process's default descriptor pool, which
holds every ``_pb2`` module ever imported: the schemas of services this
gateway does not serve among them. :func:`add_reflection` gives it a pool of
its own instead, holding the files of the served services (the app's,
health's, reflection's) and their transitive dependencies, nothing more; a
``file_by_filename`` or ``file_containing_symbol`` for anything else is
NOT_FOUND. The default pool is never changed.

grpcio-reflection ships only v1alpha. The v1 messages are wire-identical, so
v1 is served by the same servicer under the v1 name, and its file (the
v1alpha one renamed) is in the pool too, so that clients that resolve every
listed service (``buf curl --list-methods``) find it. Example::

    add_reflection(server, [orders_pb2.DESCRIPTOR.services_by_name["OrderService"]])
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import grpc
import grpc.aio
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor, ServiceDescriptor
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

if TYPE_CHECKING:
    from .guard import GuardedServer

__all__ = ["REFLECTION_V1", "add_reflection", "served_pool"]

REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"


def served_pool(files: Iterable[FileDescriptor]) -> descriptor_pool.DescriptorPool:
    """A new pool holding ``files`` and their transitive dependencies, nothing else."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file: FileDescriptor) -> None:
        if file.name in added:
            return
        for dependency in file.dependencies:  # a pool needs dependencies first
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        pool.AddSerializedFile(proto.SerializeToString())
        added.add(file.name)

    for file in files:
        add(file)
    return pool


def _v1_file_proto() -> descriptor_pb2.FileDescriptorProto:
    """The v1alpha reflection file renamed to ``grpc.reflection.v1``."""
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    old, new = f".{proto.package}.", ".grpc.reflection.v1."
    proto.name, proto.package = _V1_FILE, "grpc.reflection.v1"
    for message in proto.message_type:
        for field in message.field:
            if field.type_name:  # assigning "" would mark a scalar as typed
                field.type_name = field.type_name.replace(old, new)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    return proto


def add_reflection(
    server: grpc.aio.Server | GuardedServer, services: Iterable[ServiceDescriptor]
) -> None:
    """Serve reflection (v1alpha and v1) describing ``services`` plus reflection itself.

    Through a :class:`~wirebus.gateway.guard.GuardedServer`, it asks for credentials.
    """
    services = list(services)
    reflection_service = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]
    files = [s.file for s in services] + [reflection_pb2.DESCRIPTOR]
    pool = served_pool(files)
    pool.AddSerializedFile(_v1_file_proto().SerializeToString())
    names = [s.full_name for s in services] + [reflection_service.full_name, REFLECTION_V1]
    servicer = reflection.aio.ReflectionServicer(names, pool=pool)  # type: ignore[attr-defined]
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": v1}),)
    )
