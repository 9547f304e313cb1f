"""Every RPC, called by six kinds of caller, against the policy declared in the proto.

The expected answer of each cell is derived here from the `(keyhold.policy.v1.auth)`
option in the descriptors, by the rule policy.proto states, independently of the
server's enforcement: allowed calls must not be refused UNAUTHENTICATED or
PERMISSION_DENIED (and, with the plausible requests built here, succeed); refused ones
must be exactly UNAUTHENTICATED for anonymous callers and PERMISSION_DENIED otherwise,
each with an ErrorInfo.
"""

from __future__ import annotations

import asyncio
import enum
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message

from keyhold.application.identity.api_resources import Definition
from keyhold.application.identity.trusted_issuers import IssuerFields
from keyhold.audit.v1 import audit_service_pb2 as audit_pb
from keyhold.domain.identity.api_resources import ApiResource
from keyhold.identity.v1 import api_resource_service_pb2 as resources_pb
from keyhold.identity.v1 import identity_service_pb2 as identity_pb
from keyhold.policy.v1 import policy_pb2
from keyhold.provider.v1 import provider_service_pb2 as provider_pb
from keyhold.provider.v1 import provider_service_pb2_grpc as provider_grpc
from keyhold.server import KeyholdServer
from tests.support.oauth_provider import FakeOAuthProvider
from tests.support.rpcs import Rpc, keyhold_rpcs
from tests.support.servers import PASSWORD, bearer, running_server, settings_for, signed_in
from tests.support.status import rich_error

ON_MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")

RPCS = keyhold_rpcs()
REDIRECT = "https://app.example.com/callback"
REFUSALS = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


class Cell(enum.Enum):
    """Who calls, on whose resource; called in this order, so that the cells allowed
    to change the most (the user's own, the admin's) come last."""

    ANONYMOUS = "anonymous"
    SERVICE_WITHOUT_SCOPE = "service account without the scopes"
    SERVICE_WITH_SCOPE = "service account with the scopes"
    USER_ON_OTHERS = "user on another user's resource"
    USER_ON_OWN = "user on their own resource"
    ADMIN = "admin on another user's resource"


# Allowed by the policy, refused by what the method does: the OAuth `state` of a
# connection another user started is no state of the caller's.
BUSINESS_REFUSALS = {
    ("ProviderService.CompleteConnection", Cell.USER_ON_OTHERS): "STATE_INVALID",
    ("ProviderService.CompleteConnection", Cell.ADMIN): "STATE_INVALID",
}


# Declared, not built yet: an allowed call answers UNIMPLEMENTED (the policy still holds).
@dataclass(frozen=True)
class Caller:
    """What the policy looks at: the kind of principal, its roles and scopes."""

    principal_type: int  # a policy_pb2.PrincipalType; UNSPECIFIED for anonymous
    roles: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()


def caller_of(cell: Cell, auth: policy_pb2.AuthPolicy) -> Caller:
    if cell is Cell.ANONYMOUS:
        return Caller(policy_pb2.PRINCIPAL_TYPE_UNSPECIFIED)
    if cell is Cell.SERVICE_WITHOUT_SCOPE:
        return Caller(policy_pb2.PRINCIPAL_TYPE_SERVICE)
    if cell is Cell.SERVICE_WITH_SCOPE:
        return Caller(policy_pb2.PRINCIPAL_TYPE_SERVICE, scopes=frozenset(auth.scopes))
    if cell is Cell.ADMIN:
        return Caller(policy_pb2.PRINCIPAL_TYPE_USER, roles=frozenset({"admin", "user"}))
    return Caller(policy_pb2.PRINCIPAL_TYPE_USER, roles=frozenset({"user"}))


class Expect(enum.Enum):
    ALLOWED = "allowed"
    UNAUTHENTICATED = "unauthenticated"
    DENIED = "permission denied"


def expected(auth: policy_pb2.AuthPolicy, caller: Caller, owns_resource: bool) -> Expect:
    """policy.proto's rule: checks in field order; the role `admin` passes roles,
    scopes and owner_field."""
    if auth.public:
        return Expect.ALLOWED
    if caller.principal_type == policy_pb2.PRINCIPAL_TYPE_UNSPECIFIED:
        return Expect.UNAUTHENTICATED
    if auth.principal_types and caller.principal_type not in auth.principal_types:
        return Expect.DENIED
    if "admin" in caller.roles:
        return Expect.ALLOWED
    if auth.roles and not set(auth.roles) & caller.roles:
        return Expect.DENIED
    if not set(auth.scopes) <= caller.scopes:
        return Expect.DENIED
    if auth.owner_field and not owns_resource:
        return Expect.DENIED
    return Expect.ALLOWED


@dataclass
class Person:
    email: str
    name: str
    token: str
    resources: set[str] = field(default_factory=set)


@dataclass
class Row:
    """The principals of one RPC's row: fresh for every row, so that what one allowed
    call changes (a password, a deletion) cannot leak into another row."""

    app: KeyholdServer
    channel: grpc.aio.Channel
    oauth: FakeOAuthProvider
    me: Person  # the user of the two user cells
    other: Person  # whose resources the other cells aim at
    admin: Person
    services: dict[Cell, str]
    service_accounts: dict[Cell, str]  # their names

    def subject(self, cell: Cell) -> Person:
        return self.me if cell is Cell.USER_ON_OWN else self.other

    def token(self, cell: Cell) -> str | None:
        if cell is Cell.ANONYMOUS:
            return None
        if cell in (Cell.USER_ON_OTHERS, Cell.USER_ON_OWN):
            return self.me.token
        return self.admin.token if cell is Cell.ADMIN else self.services[cell]

    # -- resources, made fresh for the cells that consume them ---------------------------

    async def user(self) -> Person:
        email = unique("u") + "@example.com"
        token, name = await signed_in(self.app, email)
        return Person(email, name, token, {name})

    async def session(self, person: Person) -> str:
        login = await self.app.identity.sessions.login(person.email, PASSWORD, "matrix")
        person.resources.add(login.session.name)
        return login.session.name

    async def connection(self, person: Person) -> str:
        started = await self._providers().StartConnection(
            provider_pb.StartConnectionRequest(provider="providers/keys", api_key="k-123"),
            metadata=bearer(person.token),
        )
        person.resources.add(started.connection.name)
        return started.connection.name

    async def consent(self, person: Person) -> dict[str, str]:
        """An OAuth connection `person` started, and the provider's redirect back."""
        started = await self._providers().StartConnection(
            provider_pb.StartConnectionRequest(provider="providers/bank", redirect_uri=REDIRECT),
            metadata=bearer(person.token),
        )
        person.resources.add(started.connection.name)
        return await asyncio.to_thread(self.oauth.authorize, started.authorization_url)

    async def oauth_connection(self, person: Person) -> str:
        consent = await self.consent(person)
        completed = await self._providers().CompleteConnection(
            provider_pb.CompleteConnectionRequest(state=consent["state"], code=consent["code"]),
            metadata=bearer(person.token),
        )
        return completed.connection.name

    async def service_account(self) -> tuple[str, str, str]:
        account, secret = await self.app.identity.service_accounts.create("matrix", [])
        return account.name, account.client_id, secret

    async def provider(self) -> str:
        slug = unique("p")
        await self._providers().CreateProvider(
            provider_pb.CreateProviderRequest(
                provider_id=slug, provider=provider_pb.Provider(display_name="P", auth_type=2)
            ),
            metadata=bearer(self.admin.token),
        )
        return f"providers/{slug}"

    async def api_resource(self) -> str:
        return (await self._api_resource()).name

    async def _api_resource(self) -> ApiResource:
        return await self.app.identity.api_resources.create(
            unique("r"),
            Definition(
                "R",
                unique("aud"),
                {"r.read": "read"},
                {"r:viewer": frozenset({"r.read"})},
            ),
        )

    async def trusted_issuer(self) -> str:
        issuer_id = unique("i")
        issuer = await self.app.identity.trusted_issuers.create(
            issuer_id,
            IssuerFields(f"https://{issuer_id}.example", "keyhold", jwks_json=_JWKS),
        )
        return issuer.name

    async def exchangeable(self, who: Person) -> str:
        """The audience of a resource `who` holds a role of, and that every service
        account of the row may exchange tokens for."""
        resource = await self._api_resource()
        resources = self.app.identity.api_resources
        await resources.grant_roles(who.name, resource.name, ["r:viewer"])
        for account in self.service_accounts.values():
            await resources.set_exchange_grant(account, resource.name, ["r.read"])
        return resource.audience

    def _providers(self) -> provider_grpc.ProviderServiceStub:
        return provider_grpc.ProviderServiceStub(self.channel)


Build = Callable[[Row, Person], Awaitable[Message]]
REQUESTS: dict[str, Build] = {}
"""A plausible request for every RPC, aimed at `who`'s resources where it names any."""


def request_for(rpc_name: str) -> Callable[[Build], Build]:
    def register(build: Build) -> Build:
        REQUESTS[rpc_name] = build
        return build

    return register


def fixed(rpc_name: str, message: Message) -> None:
    async def build(row: Row, who: Person) -> Message:
        return message

    REQUESTS[rpc_name] = build


fixed("AuditService.ListAuditEvents", audit_pb.ListAuditEventsRequest(page_size=5))
fixed("AuditService.GetAuditEvent", audit_pb.GetAuditEventRequest(name="audit-events/1"))
fixed("AuditService.StreamAuditEvents", audit_pb.StreamAuditEventsRequest())
fixed("AuditService.VerifyAuditChain", audit_pb.VerifyAuditChainRequest())
fixed("AuditService.GetAuditCheckpoint", audit_pb.GetAuditCheckpointRequest())
fixed("IdentityService.ListUsers", identity_pb.ListUsersRequest(page_size=5))
# The same password again: allowed, and the next cell still knows the password.
fixed(
    "IdentityService.ChangePassword",
    identity_pb.ChangePasswordRequest(current_password=PASSWORD, new_password=PASSWORD),
)
fixed(
    "IdentityService.CreateServiceAccount",
    identity_pb.CreateServiceAccountRequest(display_name="S", scopes=["audit.read"]),
)
fixed("IdentityService.ListServiceAccounts", identity_pb.ListServiceAccountsRequest())
fixed("IdentityService.GetJwks", identity_pb.GetJwksRequest())
fixed("IdentityService.RotateSigningKey", identity_pb.RotateSigningKeyRequest())
fixed("IdentityService.WhoAmI", identity_pb.WhoAmIRequest())
fixed("ProviderService.ListProviders", provider_pb.ListProvidersRequest())
fixed(
    "ProviderService.UpdateProvider",
    provider_pb.UpdateProviderRequest(
        provider=provider_pb.Provider(name="providers/keys", display_name="Keys"),
        update_mask=FieldMask(paths=["display_name"]),
    ),
)
fixed(
    "ProviderService.StartConnection",
    provider_pb.StartConnectionRequest(provider="providers/keys", api_key="k-456"),
)


fixed(
    "ApiResourceService.GetApiResource",
    resources_pb.GetApiResourceRequest(name="api-resources/keyhold"),
)
fixed("ApiResourceService.ListApiResources", resources_pb.ListApiResourcesRequest())
fixed("ApiResourceService.ListTrustedIssuers", resources_pb.ListTrustedIssuersRequest())


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@request_for("IdentityService.CreateUser")
async def create_user(row: Row, who: Person) -> Message:
    email = unique("new") + "@example.com"
    return identity_pb.CreateUserRequest(email=email, password=PASSWORD, display_name="N")


@request_for("IdentityService.GetUser")
async def get_user(row: Row, who: Person) -> Message:
    return identity_pb.GetUserRequest(name=who.name)


@request_for("IdentityService.UpdateUser")
async def update_user(row: Row, who: Person) -> Message:
    return identity_pb.UpdateUserRequest(
        user=identity_pb.User(name=who.name, display_name="Renamed"),
        update_mask=FieldMask(paths=["display_name"]),
    )


@request_for("IdentityService.DeleteUser")
async def delete_user(row: Row, who: Person) -> Message:
    return identity_pb.DeleteUserRequest(name=(await row.user()).name)


@request_for("IdentityService.CreateEmailVerification")
async def create_email_verification(row: Row, who: Person) -> Message:
    return identity_pb.CreateEmailVerificationRequest(name=who.name)


@request_for("IdentityService.VerifyEmail")
async def verify_email(row: Row, who: Person) -> Message:
    unverified = await row.user()  # a token works once, and only while unverified
    token, _ = await row.app.identity.verification.create(unverified.name)
    return identity_pb.VerifyEmailRequest(verification_token=token)


@request_for("IdentityService.CreateSession")
async def create_session(row: Row, who: Person) -> Message:
    return identity_pb.CreateSessionRequest(email=who.email, password=PASSWORD)


@request_for("IdentityService.RefreshSession")
async def refresh_session(row: Row, who: Person) -> Message:
    login = await row.app.identity.sessions.login(who.email, PASSWORD, "matrix")
    return identity_pb.RefreshSessionRequest(refresh_token=login.refresh_token)


@request_for("IdentityService.RevokeToken")
async def revoke_token(row: Row, who: Person) -> Message:
    login = await row.app.identity.sessions.login(who.email, PASSWORD, "matrix")
    return identity_pb.RevokeTokenRequest(token=login.refresh_token)


@request_for("IdentityService.ListSessions")
async def list_sessions(row: Row, who: Person) -> Message:
    return identity_pb.ListSessionsRequest(parent=who.name)


@request_for("IdentityService.DeleteSession")
async def delete_session(row: Row, who: Person) -> Message:
    return identity_pb.DeleteSessionRequest(name=await row.session(who))


@request_for("IdentityService.CreatePasswordReset")
async def create_password_reset(row: Row, who: Person) -> Message:
    return identity_pb.CreatePasswordResetRequest(email=who.email)


@request_for("IdentityService.ResetPassword")
async def reset_password(row: Row, who: Person) -> Message:
    token, _ = await row.app.identity.passwords.create_reset(who.email)
    return identity_pb.ResetPasswordRequest(reset_token=token, new_password=PASSWORD)


@request_for("IdentityService.DeleteServiceAccount")
async def delete_service_account(row: Row, who: Person) -> Message:
    name, _, _ = await row.service_account()
    return identity_pb.DeleteServiceAccountRequest(name=name)


@request_for("IdentityService.CreateServiceToken")
async def create_service_token(row: Row, who: Person) -> Message:
    _, client_id, secret = await row.service_account()
    return identity_pb.CreateServiceTokenRequest(client_id=client_id, client_secret=secret)


@request_for("IdentityService.IntrospectToken")
async def introspect_token(row: Row, who: Person) -> Message:
    return identity_pb.IntrospectTokenRequest(token=who.token)


@request_for("ProviderService.CreateProvider")
async def create_provider(row: Row, who: Person) -> Message:
    return provider_pb.CreateProviderRequest(
        provider_id=unique("p"),
        provider=provider_pb.Provider(display_name="P", auth_type=provider_pb.AUTH_TYPE_API_KEY),
    )


@request_for("ProviderService.DeleteProvider")
async def delete_provider(row: Row, who: Person) -> Message:
    return provider_pb.DeleteProviderRequest(name=await row.provider())


@request_for("ProviderService.CompleteConnection")
async def complete_connection(row: Row, who: Person) -> Message:
    consent = await row.consent(who)
    return provider_pb.CompleteConnectionRequest(state=consent["state"], code=consent["code"])


@request_for("ProviderService.GetConnection")
async def get_connection(row: Row, who: Person) -> Message:
    return provider_pb.GetConnectionRequest(name=await row.connection(who))


@request_for("ProviderService.ListConnections")
async def list_connections(row: Row, who: Person) -> Message:
    return provider_pb.ListConnectionsRequest(parent=who.name)


@request_for("ProviderService.RefreshConnection")
async def refresh_connection(row: Row, who: Person) -> Message:
    return provider_pb.RefreshConnectionRequest(name=await row.oauth_connection(who))


@request_for("ProviderService.GetConnectionCredential")
async def get_connection_credential(row: Row, who: Person) -> Message:
    return provider_pb.GetConnectionCredentialRequest(name=await row.connection(who))


@request_for("ProviderService.DeleteConnection")
async def delete_connection(row: Row, who: Person) -> Message:
    return provider_pb.DeleteConnectionRequest(name=await row.connection(who))


@request_for("IdentityService.UpdateServiceAccount")
async def update_service_account(row: Row, who: Person) -> Message:
    name, _, _ = await row.service_account()
    return identity_pb.UpdateServiceAccountRequest(
        service_account=identity_pb.ServiceAccount(name=name, display_name="Renamed"),
        update_mask=FieldMask(paths=["display_name"]),
    )


@request_for("IdentityService.ExchangeToken")
async def exchange_token(row: Row, who: Person) -> Message:
    return identity_pb.ExchangeTokenRequest(
        subject_token=who.token, audience=await row.exchangeable(who)
    )


_JWK = {
    "kty": "OKP",
    "crv": "Ed25519",
    "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
    "alg": "EdDSA",
}
_JWKS = json.dumps({"keys": [{**_JWK, "kid": "issuer-key"}]})


@request_for("ApiResourceService.AddServiceAccountKey")
async def add_key(row: Row, who: Person) -> Message:
    account, _, _ = await row.service_account()
    return resources_pb.AddServiceAccountKeyRequest(
        parent=account, public_jwk=json.dumps({**_JWK, "kid": unique("k")})
    )


@request_for("ApiResourceService.ListServiceAccountKeys")
async def list_keys(row: Row, who: Person) -> Message:
    account, _, _ = await row.service_account()
    return resources_pb.ListServiceAccountKeysRequest(parent=account)


@request_for("ApiResourceService.DeleteServiceAccountKey")
async def delete_key(row: Row, who: Person) -> Message:
    account, _, _ = await row.service_account()
    key = await row.app.identity.account_keys.add(account, json.dumps({**_JWK, "kid": "k"}))
    return resources_pb.DeleteServiceAccountKeyRequest(name=key.name)


@request_for("ApiResourceService.CreateApiResource")
async def create_api_resource(row: Row, who: Person) -> Message:
    return resources_pb.CreateApiResourceRequest(
        api_resource_id=unique("r"),
        api_resource=resources_pb.ApiResource(display_name="R", audience=unique("aud")),
    )


@request_for("ApiResourceService.UpdateApiResource")
async def update_api_resource(row: Row, who: Person) -> Message:
    return resources_pb.UpdateApiResourceRequest(
        api_resource=resources_pb.ApiResource(name=await row.api_resource(), display_name="S"),
        update_mask=FieldMask(paths=["display_name"]),
    )


@request_for("ApiResourceService.DeleteApiResource")
async def delete_api_resource(row: Row, who: Person) -> Message:
    return resources_pb.DeleteApiResourceRequest(name=await row.api_resource())


@request_for("ApiResourceService.GrantServiceAccountScopes")
async def grant_scopes(row: Row, who: Person) -> Message:
    account, _, _ = await row.service_account()
    return resources_pb.GrantServiceAccountScopesRequest(
        service_account=account, api_resource=await row.api_resource(), scopes=["r.read"]
    )


@request_for("ApiResourceService.RevokeServiceAccountScopes")
async def revoke_scopes(row: Row, who: Person) -> Message:
    account, _, _ = await row.service_account()
    return resources_pb.RevokeServiceAccountScopesRequest(
        service_account=account, api_resource=await row.api_resource(), scopes=["r.read"]
    )


@request_for("ApiResourceService.GrantUserRoles")
async def grant_roles(row: Row, who: Person) -> Message:
    return resources_pb.GrantUserRolesRequest(
        user=who.name, api_resource=await row.api_resource(), roles=["r:viewer"]
    )


@request_for("ApiResourceService.RevokeUserRoles")
async def revoke_roles(row: Row, who: Person) -> Message:
    return resources_pb.RevokeUserRolesRequest(
        user=who.name, api_resource=await row.api_resource(), roles=["r:viewer"]
    )


@request_for("ApiResourceService.SetTokenExchangeGrant")
async def set_exchange_grant(row: Row, who: Person) -> Message:
    account, _, _ = await row.service_account()
    return resources_pb.SetTokenExchangeGrantRequest(
        service_account=account, api_resource=await row.api_resource(), delegable_scopes=["r.read"]
    )


@request_for("ApiResourceService.DeleteTokenExchangeGrant")
async def delete_exchange_grant(row: Row, who: Person) -> Message:
    account, _, _ = await row.service_account()
    resource = await row.api_resource()
    await row.app.identity.api_resources.set_exchange_grant(account, resource, ["r.read"])
    return resources_pb.DeleteTokenExchangeGrantRequest(
        service_account=account, api_resource=resource
    )


@request_for("ApiResourceService.CreateTrustedIssuer")
async def create_trusted_issuer(row: Row, who: Person) -> Message:
    issuer_id = unique("i")
    return resources_pb.CreateTrustedIssuerRequest(
        trusted_issuer_id=issuer_id,
        trusted_issuer=resources_pb.TrustedIssuer(
            issuer=f"https://{issuer_id}.example", jwks_json=_JWKS, audience="keyhold"
        ),
    )


@request_for("ApiResourceService.DeleteTrustedIssuer")
async def delete_trusted_issuer(row: Row, who: Person) -> Message:
    return resources_pb.DeleteTrustedIssuerRequest(name=await row.trusted_issuer())


@request_for("ApiResourceService.MapWorkloadIdentity")
async def map_workload(row: Row, who: Person) -> Message:
    account, _, _ = await row.service_account()
    return resources_pb.MapWorkloadIdentityRequest(
        trusted_issuer=await row.trusted_issuer(),
        mapping=resources_pb.WorkloadIdentityMapping(
            subject_pattern="system:serviceaccount:ns:*", service_account=account
        ),
    )


@request_for("ApiResourceService.UnmapWorkloadIdentity")
async def unmap_workload(row: Row, who: Person) -> Message:
    account, _, _ = await row.service_account()
    issuer = await row.trusted_issuer()
    await row.app.identity.trusted_issuers.map(issuer, "spiffe://ns/a", account)
    return resources_pb.UnmapWorkloadIdentityRequest(
        trusted_issuer=issuer, subject_pattern="spiffe://ns/a"
    )


def owner_value(request: Message, path: str) -> str:
    value: Any = request
    for part in path.split("."):
        value = getattr(value, part)
    return str(value)


@dataclass
class Matrix:
    app: KeyholdServer
    channel: grpc.aio.Channel
    oauth: FakeOAuthProvider

    async def row(self, rpc: Rpc) -> Row:
        me, other, admin = await asyncio.gather(
            self._person("me"), self._person("other"), self._person("admin", admin=True)
        )
        services, names = {}, {}
        for cell, scopes in (
            (Cell.SERVICE_WITHOUT_SCOPE, []),
            (Cell.SERVICE_WITH_SCOPE, list(rpc.auth.scopes)),
        ):
            account, secret = await self.app.identity.service_accounts.create("m", scopes)
            issued = await self.app.identity.service_accounts.issue_token(
                account.client_id, secret, []
            )
            services[cell] = issued.token.token
            names[cell] = account.name
        return Row(self.app, self.channel, self.oauth, me, other, admin, services, names)

    async def _person(self, label: str, *, admin: bool = False) -> Person:
        email = unique(label) + "@example.com"
        roles = ("admin", "user") if admin else ("user",)
        token, name = await signed_in(self.app, email, roles)
        return Person(email, name, token, {name})


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def matrix(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Matrix]:
    data_dir: Path = tmp_path_factory.mktemp("matrix")
    settings = settings_for(data_dir, rate_limits_enabled=False)
    with FakeOAuthProvider() as oauth:
        async with running_server(settings) as (app, channel):
            stub = provider_grpc.ProviderServiceStub(channel)
            admin, _ = await signed_in(app, "root@example.com", ("admin", "user"))
            for slug, provider in (
                ("keys", provider_pb.Provider(display_name="Keys", auth_type=2)),
                (
                    "bank",
                    provider_pb.Provider(
                        display_name="Bank",
                        auth_type=provider_pb.AUTH_TYPE_OAUTH2,
                        authorization_endpoint=oauth.authorization_endpoint,
                        token_endpoint=oauth.token_endpoint,
                        client_id=oauth.client_id,
                        default_scopes=["accounts"],
                        redirect_uris=[REDIRECT],
                    ),
                ),
            ):
                await stub.CreateProvider(
                    provider_pb.CreateProviderRequest(
                        provider_id=slug, provider=provider, client_secret=oauth.client_secret
                    ),
                    metadata=bearer(admin),
                )
            yield Matrix(app, channel, oauth)


async def call(
    rpc: Rpc, channel: grpc.aio.Channel, request: Message, token: str | None
) -> grpc.aio.AioRpcError | None:
    """None when the call succeeded, else its error."""
    metadata = bearer(token) if token else ()
    try:
        if rpc.streaming:
            stream = rpc.typed(channel)(request, metadata=metadata, timeout=10)
            try:
                await stream.read()  # the trail is never empty here: one event is enough
            finally:
                stream.cancel()
        else:
            await rpc.typed(channel)(request, metadata=metadata, timeout=10)
    except grpc.aio.AioRpcError as error:
        return error
    return None


def test_every_rpc_has_a_row() -> None:
    assert set(REQUESTS) == {rpc.name for rpc in RPCS}


@ON_MODULE_LOOP
@pytest.mark.parametrize("rpc", RPCS, ids=lambda rpc: rpc.name)
async def test_the_declared_policy_holds(matrix: Matrix, rpc: Rpc) -> None:
    build = REQUESTS.get(rpc.name)
    assert build is not None, f"{rpc.name} has no row in the authorization matrix"
    row = await matrix.row(rpc)
    auth = rpc.auth
    for cell in Cell:
        subject = row.subject(cell)
        request = await build(row, subject)
        if auth.owner_field:  # the request really aims at the subject's resource
            assert owner_value(request, auth.owner_field) in subject.resources, rpc.name
        want = expected(auth, caller_of(cell, auth), owns_resource=cell is Cell.USER_ON_OWN)
        error = await call(rpc, row.channel, request, row.token(cell))
        where = f"{rpc.name} / {cell.value}: expected {want.value}"
        if want is Expect.ALLOWED:
            refusal = BUSINESS_REFUSALS.get((rpc.name, cell))
            if refusal is None:
                assert error is None, (
                    f"{where}, got {error and error.code()} {error and error.details()}"
                )
            else:
                assert error is not None, where
                assert error.code() not in REFUSALS, where
                assert rich_error(error).reason == refusal, where
            continue
        assert error is not None, f"{where}, but the call succeeded"
        code = grpc.StatusCode.PERMISSION_DENIED
        if want is Expect.UNAUTHENTICATED:
            code = grpc.StatusCode.UNAUTHENTICATED
        details = rich_error(error)
        assert details.code is code, f"{where}, got {details.code} {details.message}"
        assert details.error_info is not None, where
        assert details.error_info.reason, where
