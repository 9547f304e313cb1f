"""Request bytes that do not decode as the method's message (corrupt wire format, a
string that is not UTF-8, nesting too deep). gRPC would answer them UNKNOWN with the
parser's message; instead the deserializer hands on a marker, which the pipeline
refuses INVALID_ARGUMENT with an ErrorInfo once the caller is authenticated."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.message import DecodeError, Message

from keyhold.domain.errors import InvalidArgument


class UndecodableRequest:
    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def error(self) -> InvalidArgument:
        return InvalidArgument(
            "REQUEST_MALFORMED", f"the request is not a valid {self.type_name} message"
        )


def lenient_parser(message_class: type[Message]) -> Callable[[bytes], Any]:
    parse = message_class.FromString
    type_name = message_class.DESCRIPTOR.full_name

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError:
            return UndecodableRequest(type_name)

    return deserialize
