"""Registering Keyhold's services with the policy pipeline wrapped around every method."""

from __future__ import annotations

from collections.abc import Sequence
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
    answers UNIMPLEMENTED. Generic handlers only (see `GenericHandlersOnly`)."""
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


class GenericHandlersOnly:
    """The server as a generated `add_*Servicer_to_server` sees it: their methods are
    taken as generic handlers only.

    Keyhold registers no method with gRPC's "registered methods": grpc.aio's serving
    loop keeps one pending call request per registered method and waits on all of them
    (`asyncio.wait`) for every call it accepts, so thirty-odd registered methods cost a
    cheap RPC about a sixth of its server CPU. Generic handlers share one request.
    """

    def __init__(self, server: aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Handler]) -> None:
        return None
