"""API resource definitions: what is accepted, and every refused field named at once."""

from __future__ import annotations

import pytest

from keyhold.domain.errors import InvalidArgument
from keyhold.domain.identity.api_resources import MAX_ROLES, MAX_SCOPES, api_resource

SCOPES = {"reports.read": "read reports", "reports.write": "write reports"}
ROLES = {"reports:viewer": frozenset({"reports.read"}), "reports:editor": frozenset(SCOPES)}


def test_a_valid_definition_is_a_resource_whose_roles_grant_their_scopes() -> None:
    resource = api_resource("reports", "Reports", "reports.internal", SCOPES, ROLES)
    assert resource.name == "api-resources/reports"
    assert resource.scopes_of(frozenset({"reports:viewer"})) == {"reports.read"}
    assert resource.scopes_of(frozenset({"reports:viewer", "reports:editor"})) == set(SCOPES)
    assert resource.scopes_of(frozenset({"admin", "billing:payer"})) == frozenset()


def test_a_uri_is_an_audience() -> None:
    resource = api_resource("billing", "Billing", "https://billing.internal/api", {}, {})
    assert resource.audience == "https://billing.internal/api"


def _refused(**changes: object) -> dict[str, list[str]]:
    definition: dict[str, object] = {
        "resource_id": "reports",
        "display_name": "Reports",
        "audience": "reports.internal",
        "scopes": SCOPES,
        "roles": ROLES,
        **changes,
    }
    with pytest.raises(InvalidArgument) as caught:
        api_resource(**definition)  # type: ignore[arg-type]
    assert caught.value.reason == "API_RESOURCE_INVALID"
    found: dict[str, list[str]] = {}
    for violation in caught.value.violations:
        found.setdefault(violation.field, []).append(violation.description)
    return found


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"resource_id": "Reports"}, "api_resource_id"),
        ({"resource_id": "r" * 64}, "api_resource_id"),
        ({"resource_id": ""}, "api_resource_id"),
        ({"display_name": "  "}, "api_resource.display_name"),
        ({"display_name": "x" * 129}, "api_resource.display_name"),
        ({"audience": ""}, "api_resource.audience"),
        ({"audience": "reports internal"}, "api_resource.audience"),
        ({"audience": "a" * 257}, "api_resource.audience"),
        ({"scopes": {"Reports.Read": ""}, "roles": {}}, "api_resource.scopes"),
        ({"scopes": {"reports.read": "x" * 257}, "roles": {}}, "api_resource.scopes"),
        (
            {"scopes": {f"s{i}": "" for i in range(MAX_SCOPES + 1)}, "roles": {}},
            "api_resource.scopes",
        ),
        ({"roles": {"Viewer": frozenset({"reports.read"})}}, "api_resource.roles"),
        ({"roles": {"reports:none": frozenset()}}, "api_resource.roles"),
        ({"roles": {"reports:admin": frozenset({"reports.delete"})}}, "api_resource.roles"),
        (
            {"roles": {f"r{i}": frozenset({"reports.read"}) for i in range(MAX_ROLES + 1)}},
            "api_resource.roles",
        ),
    ],
)
def test_an_invalid_part_is_refused_naming_its_field(
    changes: dict[str, object], field: str
) -> None:
    assert list(_refused(**changes)) == [field]


def test_every_refused_field_is_named_at_once() -> None:
    refused = _refused(
        resource_id="-",
        audience="",
        roles={"reports:admin": frozenset({"reports.delete"})},
    )
    assert set(refused) == {"api_resource_id", "api_resource.audience", "api_resource.roles"}
    assert "reports.delete" in refused["api_resource.roles"][0]


def test_a_hostile_name_is_not_echoed_whole() -> None:
    refused = _refused(scopes={"X" * 10_000: ""}, roles={})
    assert len(refused["api_resource.scopes"][0]) < 200
