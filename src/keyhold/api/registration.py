"""Registering Keyhold's services with the policy pipeline wrapped around every method."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from grpc import aio

from keyhold.api.interceptor import Handler, PolicyInterceptor
from keyhold.api.pipeline.decoding import lenient_parser


def register_service(
    server: aio.Server,
    service: ServiceDescriptor,
    servicer: Any,
    interceptor: PolicyInterceptor,
) -> None:
    """Serve every method of `service` from `servicer`, each behind the policy pipeline.
    Methods the servicer does not override reach the generated base class, which
    answers UNIMPLEMENTED."""
    handlers: dict[str, Handler] = {}
    for method in service.methods:
        request = message_factory.GetMessageClass(method.input_type)
        response = message_factory.GetMessageClass(method.output_type)
        behavior = getattr(servicer, method.name)
        if method.client_streaming:
            raise TypeError(f"{method.full_name}: client streaming is not supported")
        make = (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        base = make(
            behavior,
            request_deserializer=lenient_parser(request),
            response_serializer=response.SerializeToString,
        )
        handlers[method.name] = interceptor.wrap(f"/{service.full_name}/{method.name}", base)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)
