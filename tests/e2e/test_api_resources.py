"""API resources through ApiResourceService: each service of a fleet registers its own
audience, scopes and roles; admins grant them to service accounts and users; Keyhold
itself is the built-in resource, which only the server defines. Bad input is refused
with a reason naming what is wrong, and nothing is written."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from keyhold.audit.v1 import audit_service_pb2 as audit_pb
from keyhold.audit.v1 import audit_service_pb2_grpc as audit_grpc
from keyhold.identity.v1 import api_resource_service_pb2 as pb
from keyhold.identity.v1 import api_resource_service_pb2_grpc as pb_grpc
from keyhold.identity.v1 import identity_service_pb2 as identity_pb
from keyhold.identity.v1 import identity_service_pb2_grpc as identity_grpc
from keyhold.server import KeyholdServer
from tests.support.servers import bearer, signed_in
from tests.support.status import RichError, rich_error

Server = tuple[KeyholdServer, grpc.aio.Channel]

REPORTS = pb.ApiResource(
    display_name="Reports",
    audience="reports.internal",
    scopes=[
        pb.ApiScope(name="reports.read", description="read reports"),
        pb.ApiScope(name="reports.write", description="write reports"),
    ],
    roles=[
        pb.ApiRole(name="reports:viewer", scopes=["reports.read"]),
        pb.ApiRole(name="reports:editor", scopes=["reports.read", "reports.write"]),
    ],
)


class Admin:
    def __init__(self, app: KeyholdServer, channel: grpc.aio.Channel, token: str) -> None:
        self.app = app
        self.resources = pb_grpc.ApiResourceServiceStub(channel)
        self.identity = identity_grpc.IdentityServiceStub(channel)
        self.metadata = bearer(token)

    async def refused(self, method: str, request: Any) -> RichError:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await getattr(self.resources, method)(request, metadata=self.metadata)
        return rich_error(caught.value)

    async def names(self) -> list[str]:
        listed = await self.resources.ListApiResources(
            pb.ListApiResourcesRequest(), metadata=self.metadata
        )
        return [resource.name for resource in listed.api_resources]

    async def create_reports(self) -> pb.ApiResource:
        created = await self.resources.CreateApiResource(
            pb.CreateApiResourceRequest(api_resource_id="reports", api_resource=REPORTS),
            metadata=self.metadata,
        )
        return created.api_resource


@pytest.fixture
async def admin(server: Server) -> Admin:
    app, channel = server
    token, _ = await signed_in(app, "root@example.com", ("admin", "user"))
    return Admin(app, channel, token)


def _definition(resource: pb.ApiResource) -> tuple[Any, ...]:
    return (
        resource.name,
        resource.display_name,
        resource.audience,
        {scope.name: scope.description for scope in resource.scopes},
        {role.name: sorted(role.scopes) for role in resource.roles},
        resource.built_in,
    )


async def test_a_resource_is_created_read_listed_and_deleted(admin: Admin) -> None:
    created = await admin.create_reports()
    assert _definition(created) == (
        "api-resources/reports",
        "Reports",
        "reports.internal",
        {"reports.read": "read reports", "reports.write": "write reports"},
        {"reports:editor": ["reports.read", "reports.write"], "reports:viewer": ["reports.read"]},
        False,
    )
    assert created.create_time.seconds > 0
    got = await admin.resources.GetApiResource(
        pb.GetApiResourceRequest(name="api-resources/reports"), metadata=admin.metadata
    )
    assert _definition(got.api_resource) == _definition(created)
    assert await admin.names() == ["api-resources/keyhold", "api-resources/reports"]

    await admin.resources.DeleteApiResource(
        pb.DeleteApiResourceRequest(name="api-resources/reports"), metadata=admin.metadata
    )
    assert await admin.names() == ["api-resources/keyhold"]
    missing = await admin.refused(
        "GetApiResource", pb.GetApiResourceRequest(name="api-resources/reports")
    )
    assert (missing.code, missing.reason) == (grpc.StatusCode.NOT_FOUND, "API_RESOURCE_NOT_FOUND")


async def test_keyhold_is_the_built_in_resource_only_the_server_defines(admin: Admin) -> None:
    got = await admin.resources.GetApiResource(
        pb.GetApiResourceRequest(name="api-resources/keyhold"), metadata=admin.metadata
    )
    keyhold = got.api_resource
    assert keyhold.built_in
    assert keyhold.audience == admin.app.platform.settings.audience
    assert "identity.introspect" in {scope.name for scope in keyhold.scopes}
    assert {role.name for role in keyhold.roles} == {"admin", "user"}

    update = pb.UpdateApiResourceRequest(
        api_resource=pb.ApiResource(name="api-resources/keyhold", display_name="Mine"),
        update_mask=FieldMask(paths=["display_name"]),
    )
    for method, request in (
        ("UpdateApiResource", update),
        (
            "DeleteApiResource",
            pb.DeleteApiResourceRequest(name="api-resources/keyhold", force=True),
        ),
    ):
        refused = await admin.refused(method, request)
        assert (refused.code, refused.reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "RESOURCE_BUILT_IN",
        )
    taken = await admin.refused(
        "CreateApiResource",
        pb.CreateApiResourceRequest(
            api_resource_id="shadow",
            api_resource=pb.ApiResource(display_name="S", audience=keyhold.audience),
        ),
    )
    assert (taken.code, taken.reason) == (grpc.StatusCode.ALREADY_EXISTS, "AUDIENCE_TAKEN")


@pytest.mark.parametrize(
    ("resource_id", "resource", "fields"),
    [
        ("Reports", REPORTS, {"api_resource_id"}),
        (
            "reports",
            pb.ApiResource(display_name="", audience="has space", scopes=[pb.ApiScope(name="X")]),
            {"api_resource.display_name", "api_resource.audience", "api_resource.scopes"},
        ),
        (
            "reports",
            pb.ApiResource(
                display_name="R",
                audience="r",
                scopes=[pb.ApiScope(name="r.read"), pb.ApiScope(name="r.read")],
            ),
            {"api_resource.scopes"},
        ),
        (
            "reports",
            pb.ApiResource(
                display_name="R",
                audience="r",
                roles=[pb.ApiRole(name="r:viewer", scopes=["r.read"]), pb.ApiRole(name="r:none")],
            ),
            {"api_resource.roles"},
        ),
    ],
)
async def test_a_bad_definition_is_refused_naming_each_field_and_writes_nothing(
    admin: Admin, resource_id: str, resource: pb.ApiResource, fields: set[str]
) -> None:
    refused = await admin.refused(
        "CreateApiResource",
        pb.CreateApiResourceRequest(api_resource_id=resource_id, api_resource=resource),
    )
    assert (refused.code, refused.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "API_RESOURCE_INVALID",
    )
    assert refused.bad_request is not None
    assert {v.field for v in refused.bad_request.field_violations} == fields
    assert await admin.names() == ["api-resources/keyhold"]


async def test_ids_and_audiences_are_unique(admin: Admin) -> None:
    await admin.create_reports()
    again = await admin.refused(
        "CreateApiResource",
        pb.CreateApiResourceRequest(
            api_resource_id="reports", api_resource=pb.ApiResource(display_name="R", audience="x")
        ),
    )
    assert (again.code, again.reason) == (grpc.StatusCode.ALREADY_EXISTS, "API_RESOURCE_EXISTS")
    same_audience = await admin.refused(
        "CreateApiResource",
        pb.CreateApiResourceRequest(
            api_resource_id="copy",
            api_resource=pb.ApiResource(display_name="C", audience="reports.internal"),
        ),
    )
    assert same_audience.reason == "AUDIENCE_TAKEN"
    assert await admin.names() == ["api-resources/keyhold", "api-resources/reports"]


async def _account(admin: Admin) -> str:
    account, _ = await admin.app.identity.service_accounts.create("front", ["audit.read"])
    return account.name


async def _listed_grants(admin: Admin, account: str) -> dict[str, list[str]]:
    listed = await admin.identity.ListServiceAccounts(
        identity_pb.ListServiceAccountsRequest(), metadata=admin.metadata
    )
    found = next(a for a in listed.service_accounts if a.name == account)
    return {grant.api_resource: list(grant.scopes) for grant in found.grants}


async def test_service_accounts_are_granted_scopes_of_any_resource(admin: Admin) -> None:
    await admin.create_reports()
    account = await _account(admin)
    granted = await admin.resources.GrantServiceAccountScopes(
        pb.GrantServiceAccountScopesRequest(
            service_account=account, api_resource="api-resources/reports", scopes=["reports.read"]
        ),
        metadata=admin.metadata,
    )
    assert (granted.grant.audience, list(granted.grant.scopes)) == (
        "reports.internal",
        ["reports.read"],
    )
    assert await _listed_grants(admin, account) == {
        "api-resources/keyhold": ["audit.read"],
        "api-resources/reports": ["reports.read"],
    }

    unknown = await admin.refused(
        "GrantServiceAccountScopes",
        pb.GrantServiceAccountScopesRequest(
            service_account=account,
            api_resource="api-resources/reports",
            scopes=["reports.read", "reports.delete"],
        ),
    )
    assert (unknown.code, unknown.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "SCOPE_UNKNOWN")
    assert unknown.bad_request is not None
    assert "reports.delete" in unknown.bad_request.field_violations[0].description

    # Keyhold's own scopes are grants on the built-in resource.
    await admin.resources.GrantServiceAccountScopes(
        pb.GrantServiceAccountScopesRequest(
            service_account=account,
            api_resource="api-resources/keyhold",
            scopes=["identity.introspect"],
        ),
        metadata=admin.metadata,
    )
    await admin.resources.RevokeServiceAccountScopes(
        pb.RevokeServiceAccountScopesRequest(
            service_account=account, api_resource="api-resources/reports", scopes=["reports.read"]
        ),
        metadata=admin.metadata,
    )
    assert await _listed_grants(admin, account) == {
        "api-resources/keyhold": ["audit.read", "identity.introspect"],
    }


async def test_users_are_granted_roles_and_see_them(admin: Admin) -> None:
    await admin.create_reports()
    _, user = await signed_in(admin.app, "ada@example.com")
    granted = await admin.resources.GrantUserRoles(
        pb.GrantUserRolesRequest(
            user=user, api_resource="api-resources/reports", roles=["reports:viewer"]
        ),
        metadata=admin.metadata,
    )
    assert list(granted.grant.roles) == ["reports:viewer"]
    got = await admin.identity.GetUser(
        identity_pb.GetUserRequest(name=user), metadata=admin.metadata
    )
    assert [(g.api_resource, list(g.roles)) for g in got.user.role_grants] == [
        ("api-resources/reports", ["reports:viewer"])
    ]
    unknown = await admin.refused(
        "GrantUserRoles",
        pb.GrantUserRolesRequest(
            user=user, api_resource="api-resources/reports", roles=["reports:owner"]
        ),
    )
    assert (unknown.code, unknown.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "ROLE_UNKNOWN")

    # A removed scope leaves the roles bundling it; a role left with none goes, and so
    # does every grant of it.
    await admin.resources.UpdateApiResource(
        pb.UpdateApiResourceRequest(
            api_resource=pb.ApiResource(
                name="api-resources/reports",
                scopes=[pb.ApiScope(name="reports.write", description="write reports")],
            ),
            update_mask=FieldMask(paths=["scopes"]),
        ),
        metadata=admin.metadata,
    )
    got = await admin.identity.GetUser(
        identity_pb.GetUserRequest(name=user), metadata=admin.metadata
    )
    assert list(got.user.role_grants) == []
    reports = await admin.resources.GetApiResource(
        pb.GetApiResourceRequest(name="api-resources/reports"), metadata=admin.metadata
    )
    assert {role.name: list(role.scopes) for role in reports.api_resource.roles} == {
        "reports:editor": ["reports.write"]
    }


async def test_a_keyhold_role_grant_ends_the_users_sessions(admin: Admin) -> None:
    token, user = await signed_in(admin.app, "ada@example.com")
    await admin.resources.GrantUserRoles(
        pb.GrantUserRolesRequest(user=user, api_resource="api-resources/keyhold", roles=["admin"]),
        metadata=admin.metadata,
    )
    got = await admin.identity.GetUser(
        identity_pb.GetUserRequest(name=user), metadata=admin.metadata
    )
    assert sorted(got.user.roles) == ["admin", "user"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # its token carried the old roles
        await admin.identity.WhoAmI(identity_pb.WhoAmIRequest(), metadata=bearer(token))
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_a_resource_in_use_is_deleted_only_with_force(admin: Admin) -> None:
    await admin.create_reports()
    account = await _account(admin)
    await admin.resources.SetTokenExchangeGrant(
        pb.SetTokenExchangeGrantRequest(
            service_account=account,
            api_resource="api-resources/reports",
            delegable_scopes=["reports.read", "reports.write"],
        ),
        metadata=admin.metadata,
    )
    in_use = await admin.refused(
        "DeleteApiResource", pb.DeleteApiResourceRequest(name="api-resources/reports")
    )
    assert (in_use.code, in_use.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "RESOURCE_IN_USE")
    assert in_use.error_info is not None
    assert in_use.error_info.metadata["grants"] == "2"
    assert await admin.names() == ["api-resources/keyhold", "api-resources/reports"]

    await admin.resources.DeleteApiResource(
        pb.DeleteApiResourceRequest(name="api-resources/reports", force=True),
        metadata=admin.metadata,
    )
    assert await admin.names() == ["api-resources/keyhold"]
    gone = await admin.refused(
        "DeleteTokenExchangeGrant",
        pb.DeleteTokenExchangeGrantRequest(
            service_account=account, api_resource="api-resources/reports"
        ),
    )
    assert (gone.code, gone.reason) == (grpc.StatusCode.NOT_FOUND, "EXCHANGE_GRANT_NOT_FOUND")


async def test_each_change_is_audited_as_attempt_and_outcome(admin: Admin, server: Server) -> None:
    _, channel = server
    await admin.create_reports()
    await admin.refused(  # a failure is recorded too
        "DeleteApiResource", pb.DeleteApiResourceRequest(name="api-resources/missing")
    )
    audit = audit_grpc.AuditServiceStub(channel)
    seen = []
    for action in ("identity.api_resource.create", "identity.api_resource.delete"):
        listed = await audit.ListAuditEvents(
            audit_pb.ListAuditEventsRequest(action=action), metadata=admin.metadata
        )
        seen += [
            (event.action, event.resource_name, audit_pb.Outcome.Name(event.outcome))
            for event in reversed(listed.events)
        ]
    assert seen == [
        ("identity.api_resource.create", "api-resources/reports", "OUTCOME_ATTEMPTED"),
        ("identity.api_resource.create", "api-resources/reports", "OUTCOME_SUCCEEDED"),
        ("identity.api_resource.delete", "api-resources/missing", "OUTCOME_ATTEMPTED"),
        ("identity.api_resource.delete", "api-resources/missing", "OUTCOME_FAILED"),
    ]
