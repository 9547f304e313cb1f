"""NUL characters in request text. PostgreSQL cannot store or even compare text holding
U+0000, and no field of Keyhold's has a use for one, so the pipeline refuses them for
every method alike instead of letting them fail deep in a query."""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor

from keyhold.domain.errors import FieldViolation, InvalidArgument

_STRING = FieldDescriptor.TYPE_STRING
_MESSAGE = FieldDescriptor.TYPE_MESSAGE


def _nul_field(message: Any, prefix: str = "") -> str | None:
    for field, value in message.ListFields():
        path: str = prefix + field.name
        if field.type == _STRING:
            values = value if field.is_repeated else (value,)
            if any("\x00" in text for text in values):
                return path
        elif field.type == _MESSAGE:
            if field.message_type.GetOptions().map_entry:
                found = any("\x00" in f"{key}{item}" for key, item in value.items())
                if found:
                    return path
                continue
            for item in value if field.is_repeated else (value,):
                inner = _nul_field(item, path + ".")
                if inner is not None:
                    return inner
    return None


def refuse_nul_characters(request: Any) -> None:
    path = _nul_field(request)
    if path is not None:
        raise InvalidArgument(
            "NUL_CHARACTER",
            f"{path} contains a NUL character",
            [FieldViolation(path, "must not contain U+0000")],
        )
