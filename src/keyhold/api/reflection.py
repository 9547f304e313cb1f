"""Server reflection, v1alpha (from grpcio-reflection) and v1.

grpcio-reflection 1.85 serves only v1alpha. The v1 protocol's messages are identical
on the wire, so v1 is served by the same servicer under the v1 method name, and a v1
copy of the reflection file descriptor is added to the pool so `describe` works too.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc import aio
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1_SERVICE = "grpc.reflection.v1.ServerReflection"
_V1ALPHA_PACKAGE = "grpc.reflection.v1alpha"


def _add_v1_descriptor(pool: descriptor_pool.DescriptorPool) -> None:
    try:
        pool.FindServiceByName(V1_SERVICE)
        return
    except KeyError:
        pass
    v1 = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(v1)
    v1.name = "grpc/reflection/v1/reflection.proto"
    v1.package = "grpc.reflection.v1"
    v1.ClearField("options")
    old_prefix, new_prefix = f".{_V1ALPHA_PACKAGE}.", ".grpc.reflection.v1."
    for message in v1.message_type:
        for field in message.field:
            if field.type_name.startswith(old_prefix):
                field.type_name = new_prefix + field.type_name[len(old_prefix) :]
    for service in v1.service:
        for method in service.method:
            method.input_type = new_prefix + method.input_type[len(old_prefix) :]
            method.output_type = new_prefix + method.output_type[len(old_prefix) :]
    pool.Add(v1)


class _ReflectionServicer(reflection.aio.ReflectionServicer):
    """Also resolves method symbols (`pkg.Service.Method`), which the upb descriptor
    pool does not find by itself, to the file of their service."""

    def __init__(self, service_names: list[str], pool: descriptor_pool.DescriptorPool) -> None:
        super().__init__(service_names, pool=pool)
        self._symbols = pool

    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        service_name, _, method_name = fully_qualified_name.rpartition(".")
        try:
            self._symbols.FindFileContainingSymbol(fully_qualified_name)
        except KeyError:
            try:
                service = self._symbols.FindServiceByName(service_name)
            except KeyError:
                service = None
            if service is not None and method_name in service.methods_by_name:
                fully_qualified_name = service_name
        base: Any = super()
        return base._file_containing_symbol(request, fully_qualified_name)


def enable_reflection(server: aio.Server, service_names: list[str]) -> None:
    pool = descriptor_pool.Default()
    _add_v1_descriptor(pool)
    names = [*service_names, reflection.SERVICE_NAME, V1_SERVICE]
    servicer = _ReflectionServicer(names, pool=pool)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    for service in (reflection.SERVICE_NAME, V1_SERVICE):
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, {"ServerReflectionInfo": handler}),)
        )
