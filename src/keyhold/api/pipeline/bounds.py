"""Every request field within its declared bounds, and no NUL character in any text.

A field's bounds are declared in the proto as `(keyhold.policy.v1.bounds)`: `max_length`
characters for text (bytes for bytes fields, for each item of a repeated field and each
key and value of a map), `max_items` for repeated and map fields. A field without the
option (those of `google.protobuf` types) gets `DEFAULT_MAX_LENGTH` and
`DEFAULT_MAX_ITEMS`. PostgreSQL cannot store or even compare text holding U+0000, and no
field has a use for one, so the same pass refuses it in every string.

The options are read once per request type, when its methods are wrapped, into a check
that visits only the fields able to hold text, bytes or items; a type without such
fields has no check at all. Fields are named by their path (`user.display_name`); an
item of a repeated field by the field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn, TypeAlias

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from keyhold.api.policy import PolicyError
from keyhold.domain.errors import FieldViolation, InvalidArgument
from keyhold.policy.v1 import policy_pb2

DEFAULT_MAX_LENGTH = 256
DEFAULT_MAX_ITEMS = 64

# A check of one message: raises InvalidArgument naming the field as prefix + its path.
Finder: TypeAlias = Callable[[Any, str], None]
RequestCheck: TypeAlias = Callable[[Any, str], None]
_ItemsCheck: TypeAlias = Callable[[Any, str], None]

_STRING = FieldDescriptor.TYPE_STRING
_BYTES = FieldDescriptor.TYPE_BYTES
_MESSAGE = FieldDescriptor.TYPE_MESSAGE


def _too_long(path: str, limit: int, unit: str, item: int | None = None) -> NoReturn:
    where = path if item is None else f"item {item} of {path}"
    raise InvalidArgument(
        "FIELD_TOO_LONG",
        f"{where} is longer than {limit} {unit}",
        [FieldViolation(path, f"at most {limit} {unit}" + ("" if item is None else " each"))],
    )


def _too_many(path: str, limit: int) -> NoReturn:
    raise InvalidArgument(
        "TOO_MANY_ITEMS",
        f"{path} has more than {limit} items",
        [FieldViolation(path, f"at most {limit} items")],
    )


def _nul(path: str) -> NoReturn:
    raise InvalidArgument(
        "NUL_CHARACTER",
        f"{path} contains a NUL character",
        [FieldViolation(path, "must not contain U+0000")],
    )


def _refuse_text(path: str, value: str, limit: int, item: int | None = None) -> NoReturn:
    if len(value) > limit:
        _too_long(path, limit, "characters", item)
    _nul(path)


def _declared(field: FieldDescriptor) -> tuple[int, int]:
    """(max_length, max_items) as declared, 0 for each one not declared; PolicyError
    for bounds the field's type cannot have."""
    options = field.GetOptions()
    if not options.HasExtension(policy_pb2.bounds):
        return 0, 0
    bounds = options.Extensions[policy_pb2.bounds]
    if bounds.max_items and not field.is_repeated:
        raise PolicyError(f"{field.full_name}: max_items on a field that is not repeated")
    if bounds.max_length and not _holds_text(field):
        raise PolicyError(f"{field.full_name}: max_length on a field without text or bytes")
    return bounds.max_length, bounds.max_items


def _message_type(field: FieldDescriptor) -> Descriptor:
    descriptor = field.message_type
    assert descriptor is not None, field.full_name
    return descriptor


def _holds_text(field: FieldDescriptor) -> bool:
    if _is_map(field):
        entry = _message_type(field).fields_by_name
        return entry["key"].type == _STRING or entry["value"].type in (_STRING, _BYTES)
    return field.type in (_STRING, _BYTES)


def _is_map(field: FieldDescriptor) -> bool:
    return field.type == _MESSAGE and _message_type(field).GetOptions().map_entry


def ceilings(field: FieldDescriptor) -> tuple[int, int]:
    """The field's (max_length, max_items) in force: declared, else the defaults."""
    length, items = _declared(field)
    return length or DEFAULT_MAX_LENGTH, items or DEFAULT_MAX_ITEMS


class _Compiler:
    """The finders of message types, each compiled once; a recursive type's finder
    looks itself up when it is called."""

    def __init__(self) -> None:
        self._finders: dict[str, Finder | None] = {}
        self._compiling: set[str] = set()

    def finder(self, descriptor: Descriptor) -> Finder | None:
        name = descriptor.full_name
        if name in self._finders:
            return self._finders[name]
        if name in self._compiling:  # recursion: resolved at call time
            finders = self._finders

            def recursive(message: Any, prefix: str) -> None:
                found = finders[name]
                if found is not None:
                    found(message, prefix)

            return recursive
        self._compiling.add(name)
        try:
            compiled = self._compile(descriptor)
        finally:
            self._compiling.discard(name)
        self._finders[name] = compiled
        return compiled

    def _compile(self, descriptor: Descriptor) -> Finder | None:
        texts: list[tuple[str, int]] = []
        blobs: list[tuple[str, int]] = []
        steps: list[Finder] = []
        for field in descriptor.fields:
            length, items = ceilings(field)
            if field.is_repeated:
                steps.append(_repeated(field.name, items, self._items(field, length)))
            elif field.type == _STRING:
                texts.append((field.name, length))
            elif field.type == _BYTES:
                blobs.append((field.name, length))
            elif field.type == _MESSAGE:
                inner = self.finder(_message_type(field))
                if inner is not None:
                    steps.append(_nested(field.name, inner))
        if blobs:
            steps.insert(0, _singular_bytes(tuple(blobs)))
        if texts:
            steps.insert(0, _singular_texts(tuple(texts)))
        if not steps:
            return None
        if len(steps) == 1:
            return steps[0]
        return _all_of(tuple(steps))

    def _items(self, field: FieldDescriptor, length: int) -> _ItemsCheck | None:
        """The check of a repeated field's items, once their count is known in bounds."""
        if _is_map(field):
            entry = _message_type(field).fields_by_name
            key, value = entry["key"], entry["value"]
            inner = self.finder(_message_type(value)) if value.type == _MESSAGE else None
            return _map_items(length, key.type == _STRING, value.type, inner)
        if field.type == _STRING:
            return _text_items(length)
        if field.type == _BYTES:
            return _bytes_items(length)
        if field.type == _MESSAGE:
            inner = self.finder(_message_type(field))
            return None if inner is None else _message_items(inner)
        return None


def _singular_texts(fields: tuple[tuple[str, int], ...]) -> Finder:
    def texts(message: Any, prefix: str) -> None:
        for name, limit in fields:
            value = getattr(message, name)
            if len(value) > limit or "\x00" in value:
                _refuse_text(prefix + name, value, limit)

    return texts


def _singular_bytes(fields: tuple[tuple[str, int], ...]) -> Finder:
    def blobs(message: Any, prefix: str) -> None:
        for name, limit in fields:
            if len(getattr(message, name)) > limit:
                _too_long(prefix + name, limit, "bytes")

    return blobs


def _nested(name: str, inner: Finder) -> Finder:
    def nested(message: Any, prefix: str) -> None:
        if message.HasField(name):
            inner(getattr(message, name), prefix + name + ".")

    return nested


def _repeated(name: str, max_items: int, items: _ItemsCheck | None) -> Finder:
    def repeated(message: Any, prefix: str) -> None:
        values = getattr(message, name)
        if len(values) > max_items:
            _too_many(prefix + name, max_items)
        if items is not None and values:
            items(values, prefix + name)

    return repeated


def _text_items(limit: int) -> _ItemsCheck:
    def text_items(values: Any, path: str) -> None:
        for index, value in enumerate(values):
            if len(value) > limit or "\x00" in value:
                _refuse_text(path, value, limit, index)

    return text_items


def _bytes_items(limit: int) -> _ItemsCheck:
    def bytes_items(values: Any, path: str) -> None:
        for index, value in enumerate(values):
            if len(value) > limit:
                _too_long(path, limit, "bytes", index)

    return bytes_items


def _message_items(inner: Finder) -> _ItemsCheck:
    def message_items(values: Any, path: str) -> None:
        prefix = path + "."
        for value in values:
            inner(value, prefix)

    return message_items


def _map_items(limit: int, text_keys: bool, value_type: int, inner: Finder | None) -> _ItemsCheck:
    def map_items(entries: Any, path: str) -> None:
        for key, value in entries.items():
            if text_keys and (len(key) > limit or "\x00" in key):
                _refuse_text(path, key, limit)
            if value_type == _STRING:
                if len(value) > limit or "\x00" in value:
                    _refuse_text(path, value, limit)
            elif value_type == _BYTES:
                if len(value) > limit:
                    _too_long(path, limit, "bytes")
            elif inner is not None:
                inner(value, path + ".")

    return map_items


def _all_of(steps: tuple[Finder, ...]) -> Finder:
    def all_of(message: Any, prefix: str) -> None:
        for step in steps:
            step(message, prefix)

    return all_of


_COMPILER = _Compiler()


def request_check(descriptor: Descriptor) -> RequestCheck | None:
    """The check of messages of this type, called as `check(message, "")`; None when
    no field of it can hold text, bytes or items. Compiled on the first call for a type
    (at start-up); PolicyError when a field declares bounds its type cannot have."""
    return _COMPILER.finder(descriptor)


def refuse_out_of_bounds(message: Any) -> None:
    """Raises InvalidArgument (FIELD_TOO_LONG, TOO_MANY_ITEMS or NUL_CHARACTER) for the
    first field of `message` out of its bounds."""
    check = request_check(message.DESCRIPTOR)
    if check is not None:
        check(message, "")
