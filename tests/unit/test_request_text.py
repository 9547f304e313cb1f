"""NUL characters are found wherever a request carries text."""

from __future__ import annotations

import pytest

from keyhold.api.pipeline.text import refuse_nul_characters
from keyhold.audit.v1 import audit_service_pb2 as audit_pb
from keyhold.domain.errors import InvalidArgument
from keyhold.identity.v1 import identity_service_pb2 as identity_pb


def violation_field(message: object) -> str:
    with pytest.raises(InvalidArgument) as caught:
        refuse_nul_characters(message)
    assert caught.value.reason == "NUL_CHARACTER"
    return caught.value.violations[0].field


def test_clean_text_passes() -> None:
    refuse_nul_characters(identity_pb.CreateUserRequest(email="a@example.com", password="é\x01"))
    refuse_nul_characters(
        audit_pb.ListAuditEventsResponse(events=[audit_pb.AuditEvent(details={"k": "v"})])
    )


def test_a_nul_is_found_at_any_depth_and_named_by_its_path() -> None:
    assert violation_field(identity_pb.GetUserRequest(name="users/\x00")) == "name"
    assert violation_field(identity_pb.UpdateUserRequest(user={"display_name": "a\x00"})) == (
        "user.display_name"
    )
    assert violation_field(identity_pb.CreateServiceAccountRequest(scopes=["a", "\x00"])) == (
        "scopes"
    )
    events = [audit_pb.AuditEvent(), audit_pb.AuditEvent(details={"k\x00": "v"})]
    assert violation_field(audit_pb.ListAuditEventsResponse(events=events)) == "events.details"
