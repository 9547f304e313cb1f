"""Every RPC of Keyhold's services, found in the generated descriptors (not in the server),
so that tests iterating over them cover a new RPC without being told about it."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

import keyhold.identity
from keyhold.policy.v1 import policy_pb2

GENERATED_ROOT = Path(keyhold.identity.__path__[0]).parent  # generated/keyhold


@dataclass(frozen=True)
class Rpc:
    descriptor: MethodDescriptor

    def __repr__(self) -> str:
        return f"Rpc({self.name})"

    @property
    def path(self) -> str:
        """The wire name, `/package.Service/Method`."""
        return f"/{self.descriptor.containing_service.full_name}/{self.descriptor.name}"

    @property
    def name(self) -> str:
        return f"{self.descriptor.containing_service.name}.{self.descriptor.name}"

    @property
    def streaming(self) -> bool:
        return bool(self.descriptor.server_streaming)

    @property
    def auth(self) -> policy_pb2.AuthPolicy:
        options = self.descriptor.GetOptions()
        policy = policy_pb2.AuthPolicy()
        if options.HasExtension(policy_pb2.auth):
            policy.CopyFrom(options.Extensions[policy_pb2.auth])
        return policy

    def request_class(self) -> type[Message]:
        return message_factory.GetMessageClass(self.descriptor.input_type)

    def response_class(self) -> type[Message]:
        return message_factory.GetMessageClass(self.descriptor.output_type)

    def raw(self, channel: grpc.aio.Channel) -> Any:
        """A multicallable that sends and receives bytes as they are."""
        make = channel.unary_stream if self.streaming else channel.unary_unary
        return make(self.path, request_serializer=None, response_deserializer=None)

    def typed(self, channel: grpc.aio.Channel) -> Any:
        make = channel.unary_stream if self.streaming else channel.unary_unary
        return make(
            self.path,
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=self.response_class().FromString,
        )


def _service_modules() -> Iterator[Any]:
    for path in sorted(GENERATED_ROOT.rglob("*_pb2.py")):
        parts = path.relative_to(GENERATED_ROOT.parent).with_suffix("").parts
        yield importlib.import_module(".".join(parts))


@cache
def keyhold_rpcs() -> tuple[Rpc, ...]:
    """Every method of every service declared under proto/keyhold, in declaration order."""
    return tuple(
        Rpc(method)
        for module in _service_modules()
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    )
