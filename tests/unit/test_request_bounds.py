"""Request fields within their declared bounds, and NUL characters found wherever a
message carries text: what the pipeline checks before any policy reads a request."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, struct_pb2, wrappers_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.field_mask_pb2 import FieldMask

from keyhold.api.pipeline.bounds import (
    DEFAULT_MAX_ITEMS,
    DEFAULT_MAX_LENGTH,
    ceilings,
    refuse_out_of_bounds,
    request_check,
)
from keyhold.api.policy import PolicyError
from keyhold.audit.v1 import audit_service_pb2 as audit_pb
from keyhold.domain.errors import InvalidArgument
from keyhold.identity.v1 import identity_service_pb2 as identity_pb
from keyhold.identity.v1.identity_service_pb2 import CreateUserRequest
from keyhold.policy.v1 import policy_pb2
from keyhold.provider.v1 import provider_service_pb2 as provider_pb
from keyhold.wiring.grpc_api import SERVICES


def refusal(message: object) -> tuple[str, str]:
    """(reason, field path) of the refusal of `message`."""
    with pytest.raises(InvalidArgument) as caught:
        refuse_out_of_bounds(message)
    assert len(caught.value.violations) == 1
    return caught.value.reason, caught.value.violations[0].field


def violation_field(message: object) -> str:
    reason, field = refusal(message)
    assert reason == "NUL_CHARACTER"
    return field


def test_clean_text_passes() -> None:
    refuse_out_of_bounds(identity_pb.CreateUserRequest(email="a@example.com", password="é\x01"))
    refuse_out_of_bounds(
        audit_pb.ListAuditEventsResponse(events=[audit_pb.AuditEvent(details={"k": "v"})])
    )


def test_a_nul_is_found_at_any_depth_and_named_by_its_path() -> None:
    assert violation_field(identity_pb.GetUserRequest(name="users/\x00")) == "name"
    assert violation_field(
        identity_pb.UpdateUserRequest(user=identity_pb.User(display_name="a\x00"))
    ) == ("user.display_name")
    assert violation_field(identity_pb.CreateServiceAccountRequest(scopes=["a", "\x00"])) == (
        "scopes"
    )
    events = [audit_pb.AuditEvent(), audit_pb.AuditEvent(details={"k\x00": "v"})]
    assert violation_field(audit_pb.ListAuditEventsResponse(events=events)) == "events.details"


def test_a_field_at_its_limit_passes_and_one_character_more_is_too_long() -> None:
    at_limit = "a" * (254 - len("@example.com")) + "@example.com"
    refuse_out_of_bounds(CreateUserRequest(email=at_limit, password="p" * 128))
    assert refusal(CreateUserRequest(email="a" + at_limit)) == ("FIELD_TOO_LONG", "email")
    assert refusal(CreateUserRequest(password="p" * 129)) == ("FIELD_TOO_LONG", "password")
    # Characters, not bytes: 128 four-byte characters are a 128-character password.
    refuse_out_of_bounds(CreateUserRequest(password="\U0001f511" * 128))


def test_nested_fields_and_items_are_bounded_and_named_by_their_path() -> None:
    long_name = identity_pb.UpdateUserRequest(user=identity_pb.User(display_name="d" * 257))
    assert refusal(long_name) == ("FIELD_TOO_LONG", "user.display_name")
    long_endpoint = provider_pb.CreateProviderRequest(
        provider=provider_pb.Provider(token_endpoint="https://example.com/" + "t" * 2048)
    )
    assert refusal(long_endpoint) == ("FIELD_TOO_LONG", "provider.token_endpoint")
    assert refusal(identity_pb.CreateServiceTokenRequest(scopes=["audit.read"] * 65)) == (
        "TOO_MANY_ITEMS",
        "scopes",
    )
    refuse_out_of_bounds(identity_pb.CreateServiceTokenRequest(scopes=["audit.read"] * 64))
    long_scope = identity_pb.CreateServiceTokenRequest(scopes=["audit.read", "s" * 129])
    with pytest.raises(InvalidArgument) as caught:
        refuse_out_of_bounds(long_scope)
    assert caught.value.reason == "FIELD_TOO_LONG"
    assert caught.value.message == "item 1 of scopes is longer than 128 characters"


def test_fields_without_declared_bounds_get_the_defaults() -> None:
    paths = FieldMask(paths=["display_name"] * (DEFAULT_MAX_ITEMS + 1))
    assert refusal(identity_pb.UpdateUserRequest(update_mask=paths)) == (
        "TOO_MANY_ITEMS",
        "update_mask.paths",
    )
    long_path = FieldMask(paths=["p" * (DEFAULT_MAX_LENGTH + 1)])
    assert refusal(identity_pb.UpdateUserRequest(update_mask=long_path)) == (
        "FIELD_TOO_LONG",
        "update_mask.paths",
    )
    assert refusal(wrappers_pb2.BytesValue(value=b"\x00" * (DEFAULT_MAX_LENGTH + 1))) == (
        "FIELD_TOO_LONG",
        "value",
    )
    refuse_out_of_bounds(wrappers_pb2.BytesValue(value=b"\x00" * DEFAULT_MAX_LENGTH))
    details = {str(n): "v" for n in range(DEFAULT_MAX_ITEMS + 1)}
    events = audit_pb.ListAuditEventsResponse(events=[audit_pb.AuditEvent(details=details)])
    assert refusal(events) == ("TOO_MANY_ITEMS", "events.details")


def test_a_recursive_message_is_checked_at_every_depth() -> None:
    deep = struct_pb2.Value(string_value="x" * (DEFAULT_MAX_LENGTH + 1))
    for _ in range(20):
        deep = struct_pb2.Value(list_value=struct_pb2.ListValue(values=[deep]))
    reason, field = refusal(struct_pb2.Struct(fields={"k": deep}))
    assert reason == "FIELD_TOO_LONG"
    assert field == "fields" + ".list_value.values" * 20 + ".string_value"


def test_a_message_without_text_or_items_has_no_check() -> None:
    assert request_check(identity_pb.WhoAmIRequest.DESCRIPTOR) is None
    assert request_check(audit_pb.StreamAuditEventsRequest.DESCRIPTOR) is None
    assert request_check(identity_pb.CreateUserRequest.DESCRIPTOR) is not None


def _reachable(descriptor: Descriptor, seen: set[str]) -> Iterator[Descriptor]:
    if descriptor.full_name in seen:
        return
    seen.add(descriptor.full_name)
    yield descriptor
    for field in descriptor.fields:
        if field.message_type is not None:
            yield from _reachable(field.message_type, seen)


def _request_types() -> list[Descriptor]:
    seen: set[str] = set()
    found: list[Descriptor] = []
    for service in SERVICES:
        for method in service.methods:
            found.extend(_reachable(method.input_type, seen))
    return found


def _bounded_kind(field: FieldDescriptor) -> bool:
    return field.is_repeated or field.type in (field.TYPE_STRING, field.TYPE_BYTES)


def test_every_field_of_every_request_has_a_ceiling() -> None:
    """Every string, bytes, repeated and map field that any RPC's request can hold, at
    any depth: Keyhold's own messages declare bounds on each such field; the fields of
    other packages' messages (FieldMask) get the defaults."""
    undeclared = []
    checked = 0
    for message in _request_types():
        for field in message.fields:
            if not _bounded_kind(field):
                continue
            checked += 1
            length, items = ceilings(field)
            assert length > 0, field.full_name
            assert items > 0, field.full_name
            options = field.GetOptions()
            if not field.full_name.startswith("keyhold."):
                continue
            declared = options.Extensions[policy_pb2.bounds]
            holds_text = field.type in (field.TYPE_STRING, field.TYPE_BYTES)
            if (
                not options.HasExtension(policy_pb2.bounds)
                or (holds_text and not declared.max_length)
                or (field.is_repeated and not declared.max_items)
            ):
                undeclared.append(field.full_name)
    assert checked > 50
    assert not undeclared, (
        f"declare [(keyhold.policy.v1.bounds) = {{max_length: N, max_items: N}}] on {undeclared}"
    )


def test_every_request_type_compiles() -> None:
    for message in _request_types():
        request_check(message)


def _annotated_message(name: str, field_type: int, label: int, bounds: str) -> Descriptor:
    """A message, in the default pool, with one field `f` carrying `bounds`."""
    file = descriptor_pb2.FileDescriptorProto(
        name=f"tests/bounds/{name}.proto",
        package="tests.bounds",
        syntax="proto3",
        dependency=["keyhold/policy/v1/policy.proto"],
    )
    field = file.message_type.add(name=name).field.add(
        name="f", number=1, type=field_type, label=label
    )
    options = policy_pb2.FieldBounds()
    for part in bounds.split(","):
        key, _, value = part.partition("=")
        setattr(options, key.strip(), int(value))
    field.options.Extensions[policy_pb2.bounds].CopyFrom(options)
    pool = descriptor_pool.Default()
    pool.Add(file)
    return pool.FindMessageTypeByName(f"tests.bounds.{name}")


SINGULAR, REPEATED = FieldDescriptor.LABEL_OPTIONAL, FieldDescriptor.LABEL_REPEATED
STRING, INT64 = FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_INT64


@pytest.mark.parametrize(
    ("name", "field_type", "label", "bounds"),
    [
        ("LengthOnAnInteger", INT64, SINGULAR, "max_length=3"),
        ("ItemsOnASingularString", STRING, SINGULAR, "max_items=3"),
        ("LengthOnRepeatedIntegers", INT64, REPEATED, "max_length=3"),
    ],
)
def test_bounds_that_do_not_fit_the_field_stop_the_server_from_starting(
    name: str, field_type: int, label: int, bounds: str
) -> None:
    message = _annotated_message(name, field_type, label, bounds)
    with pytest.raises(PolicyError, match=r"tests\.bounds\." + name + r"\.f"):
        request_check(message)


def test_declared_bounds_that_fit_are_taken() -> None:
    message = _annotated_message("RepeatedText", STRING, REPEATED, "max_length=3, max_items=2")
    assert ceilings(message.fields_by_name["f"]) == (3, 2)
