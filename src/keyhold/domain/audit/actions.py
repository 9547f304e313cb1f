"""The registry of audited actions: every action any handler records, with the type of
resource it acts on and the RPC that performs it. Handlers can only name actions from
this enum; a test checks that each one is recorded somewhere."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Action(StrEnum):
    ACCESS_DENIED = "access.denied"
    AUDIT_EVENTS_LIST = "audit.events.list"
    AUDIT_EVENT_GET = "audit.event.get"
    AUDIT_EVENTS_STREAM = "audit.events.stream"
    AUDIT_CHAIN_VERIFY = "audit.chain.verify"
    AUDIT_CHECKPOINT_GET = "audit.checkpoint.get"
    RATE_LIMITED = "access.rate_limited"
    USER_CREATE = "identity.user.create"
    USER_GET = "identity.user.get"
    USERS_LIST = "identity.users.list"
    SESSIONS_LIST = "identity.sessions.list"
    TOKEN_INTROSPECT = "identity.token.introspect"
    USER_UPDATE = "identity.user.update"
    USER_DELETE = "identity.user.delete"
    SESSION_CREATE = "identity.session.create"
    SESSION_REFRESH = "identity.session.refresh"
    SESSION_DELETE = "identity.session.delete"
    TOKEN_REVOKE = "identity.token.revoke"
    PASSWORD_CHANGE = "identity.password.change"
    PASSWORD_RESET_CREATE = "identity.password_reset.create"
    PASSWORD_RESET = "identity.password.reset"
    EMAIL_VERIFICATION_CREATE = "identity.email_verification.create"
    EMAIL_VERIFY = "identity.email.verify"
    SIGNING_KEY_ROTATE = "identity.signing_key.rotate"
    VAULT_RESEAL = "security.vault.reseal"
    SERVICE_ACCOUNT_CREATE = "identity.service_account.create"
    SERVICE_ACCOUNT_DELETE = "identity.service_account.delete"
    SERVICE_ACCOUNT_UPDATE = "identity.service_account.update"
    SERVICE_TOKEN_CREATE = "identity.service_token.create"
    API_RESOURCE_CREATE = "identity.api_resource.create"
    API_RESOURCE_UPDATE = "identity.api_resource.update"
    API_RESOURCE_DELETE = "identity.api_resource.delete"
    SERVICE_ACCOUNT_SCOPES_GRANT = "identity.service_account_scopes.grant"
    SERVICE_ACCOUNT_SCOPES_REVOKE = "identity.service_account_scopes.revoke"
    USER_ROLES_GRANT = "identity.user_roles.grant"
    USER_ROLES_REVOKE = "identity.user_roles.revoke"
    TOKEN_EXCHANGE_GRANT_SET = "identity.token_exchange_grant.set"
    TOKEN_EXCHANGE_GRANT_DELETE = "identity.token_exchange_grant.delete"
    TOKEN_EXCHANGE = "identity.token.exchange"
    SERVICE_ACCOUNT_KEY_ADD = "identity.service_account_key.add"
    SERVICE_ACCOUNT_KEY_DELETE = "identity.service_account_key.delete"
    TRUSTED_ISSUER_CREATE = "identity.trusted_issuer.create"
    TRUSTED_ISSUER_DELETE = "identity.trusted_issuer.delete"
    WORKLOAD_IDENTITY_MAP = "identity.workload_identity.map"
    WORKLOAD_IDENTITY_UNMAP = "identity.workload_identity.unmap"
    PROVIDER_CREATE = "provider.provider.create"
    PROVIDER_UPDATE = "provider.provider.update"
    PROVIDER_DELETE = "provider.provider.delete"
    CONNECTION_START = "provider.connection.start"
    CONNECTION_COMPLETE = "provider.connection.complete"
    CONNECTION_REFRESH = "provider.connection.refresh"
    CONNECTION_DELETE = "provider.connection.delete"
    CREDENTIAL_READ = "provider.credential.read"
    PROVIDERS_LIST = "provider.providers.list"
    CONNECTION_GET = "provider.connection.get"
    CONNECTIONS_LIST = "provider.connections.list"


@dataclass(frozen=True, slots=True)
class ActionInfo:
    resource_type: str
    rpc: str | None  # "/package.Service/Method", or None for actions not tied to one RPC
    description: str


_AUDIT = "/keyhold.audit.v1.AuditService/"
_IDENTITY = "/keyhold.identity.v1.IdentityService/"
_PROVIDER = "/keyhold.provider.v1.ProviderService/"
_RESOURCES = "/keyhold.identity.v1.ApiResourceService/"

REGISTRY: dict[Action, ActionInfo] = {
    Action.ACCESS_DENIED: ActionInfo(
        "rpc", None, "a call refused by authentication or authorization before its handler"
    ),
    Action.AUDIT_EVENTS_LIST: ActionInfo("audit-event", _AUDIT + "ListAuditEvents", "audit read"),
    Action.AUDIT_EVENT_GET: ActionInfo("audit-event", _AUDIT + "GetAuditEvent", "audit read"),
    Action.AUDIT_EVENTS_STREAM: ActionInfo(
        "audit-event", _AUDIT + "StreamAuditEvents", "audit stream opened and closed"
    ),
    Action.AUDIT_CHAIN_VERIFY: ActionInfo(
        "audit-event", _AUDIT + "VerifyAuditChain", "hash chain verified"
    ),
    Action.AUDIT_CHECKPOINT_GET: ActionInfo(
        "audit-checkpoint", _AUDIT + "GetAuditCheckpoint", "signed checkpoint issued"
    ),
    Action.RATE_LIMITED: ActionInfo(
        "rpc",
        None,
        "calls refused by a rate limit: the first per key and window, then a count",
    ),
    Action.USER_CREATE: ActionInfo("user", _IDENTITY + "CreateUser", "registration"),
    Action.USER_GET: ActionInfo("user", _IDENTITY + "GetUser", "another user's profile read"),
    Action.USERS_LIST: ActionInfo("user", _IDENTITY + "ListUsers", "users listed (admins)"),
    Action.SESSIONS_LIST: ActionInfo(
        "session", _IDENTITY + "ListSessions", "another user's sessions listed"
    ),
    Action.TOKEN_INTROSPECT: ActionInfo(
        "token", _IDENTITY + "IntrospectToken", "an active token of another principal read"
    ),
    Action.USER_UPDATE: ActionInfo("user", _IDENTITY + "UpdateUser", "profile, roles or state"),
    Action.USER_DELETE: ActionInfo("user", _IDENTITY + "DeleteUser", "user removed"),
    Action.SESSION_CREATE: ActionInfo("session", _IDENTITY + "CreateSession", "login"),
    Action.SESSION_REFRESH: ActionInfo(
        "session", _IDENTITY + "RefreshSession", "refresh token rotated, or reuse detected"
    ),
    Action.SESSION_DELETE: ActionInfo("session", _IDENTITY + "DeleteSession", "logout"),
    Action.PASSWORD_CHANGE: ActionInfo("user", _IDENTITY + "ChangePassword", "password change"),
    Action.PASSWORD_RESET_CREATE: ActionInfo(
        "user", _IDENTITY + "CreatePasswordReset", "reset token issued"
    ),
    Action.PASSWORD_RESET: ActionInfo("user", _IDENTITY + "ResetPassword", "password reset"),
    Action.EMAIL_VERIFICATION_CREATE: ActionInfo(
        "user", _IDENTITY + "CreateEmailVerification", "verification token issued"
    ),
    Action.EMAIL_VERIFY: ActionInfo("user", _IDENTITY + "VerifyEmail", "email verified"),
    Action.SIGNING_KEY_ROTATE: ActionInfo(
        "signing-key", _IDENTITY + "RotateSigningKey", "signing key rotated"
    ),
    Action.VAULT_RESEAL: ActionInfo(
        "vault", None, "secrets sealed at rest re-encrypted under the newest key (CLI)"
    ),
    Action.SERVICE_ACCOUNT_CREATE: ActionInfo(
        "service-account", _IDENTITY + "CreateServiceAccount", "service account created"
    ),
    Action.SERVICE_ACCOUNT_DELETE: ActionInfo(
        "service-account", _IDENTITY + "DeleteServiceAccount", "service account deleted"
    ),
    Action.SERVICE_ACCOUNT_UPDATE: ActionInfo(
        "service-account", _IDENTITY + "UpdateServiceAccount", "name, or refusing secrets"
    ),
    Action.SERVICE_TOKEN_CREATE: ActionInfo(
        "service-account", _IDENTITY + "CreateServiceToken", "client-credentials grant"
    ),
    Action.API_RESOURCE_CREATE: ActionInfo(
        "api-resource", _RESOURCES + "CreateApiResource", "API resource registered"
    ),
    Action.API_RESOURCE_UPDATE: ActionInfo(
        "api-resource", _RESOURCES + "UpdateApiResource", "API resource redefined"
    ),
    Action.API_RESOURCE_DELETE: ActionInfo(
        "api-resource", _RESOURCES + "DeleteApiResource", "API resource and its grants removed"
    ),
    Action.SERVICE_ACCOUNT_SCOPES_GRANT: ActionInfo(
        "service-account", _RESOURCES + "GrantServiceAccountScopes", "scopes granted"
    ),
    Action.SERVICE_ACCOUNT_SCOPES_REVOKE: ActionInfo(
        "service-account", _RESOURCES + "RevokeServiceAccountScopes", "scopes revoked"
    ),
    Action.USER_ROLES_GRANT: ActionInfo("user", _RESOURCES + "GrantUserRoles", "roles granted"),
    Action.USER_ROLES_REVOKE: ActionInfo("user", _RESOURCES + "RevokeUserRoles", "roles revoked"),
    Action.TOKEN_EXCHANGE_GRANT_SET: ActionInfo(
        "service-account", _RESOURCES + "SetTokenExchangeGrant", "may exchange for a resource"
    ),
    Action.TOKEN_EXCHANGE_GRANT_DELETE: ActionInfo(
        "service-account", _RESOURCES + "DeleteTokenExchangeGrant", "exchange grant withdrawn"
    ),
    Action.TOKEN_REVOKE: ActionInfo(
        "session", _IDENTITY + "RevokeToken", "a session ended through one of its tokens"
    ),
    Action.TOKEN_EXCHANGE: ActionInfo(
        "user", _IDENTITY + "ExchangeToken", "a user's token exchanged by a service"
    ),
    Action.SERVICE_ACCOUNT_KEY_ADD: ActionInfo(
        "service-account", _RESOURCES + "AddServiceAccountKey", "assertion key registered"
    ),
    Action.SERVICE_ACCOUNT_KEY_DELETE: ActionInfo(
        "service-account", _RESOURCES + "DeleteServiceAccountKey", "assertion key removed"
    ),
    Action.TRUSTED_ISSUER_CREATE: ActionInfo(
        "trusted-issuer", _RESOURCES + "CreateTrustedIssuer", "external token issuer trusted"
    ),
    Action.TRUSTED_ISSUER_DELETE: ActionInfo(
        "trusted-issuer", _RESOURCES + "DeleteTrustedIssuer", "issuer and its mappings removed"
    ),
    Action.WORKLOAD_IDENTITY_MAP: ActionInfo(
        "trusted-issuer", _RESOURCES + "MapWorkloadIdentity", "subjects act as an account"
    ),
    Action.WORKLOAD_IDENTITY_UNMAP: ActionInfo(
        "trusted-issuer", _RESOURCES + "UnmapWorkloadIdentity", "subject mapping removed"
    ),
    Action.PROVIDER_CREATE: ActionInfo("provider", _PROVIDER + "CreateProvider", "catalog"),
    Action.PROVIDER_UPDATE: ActionInfo("provider", _PROVIDER + "UpdateProvider", "catalog"),
    Action.PROVIDER_DELETE: ActionInfo("provider", _PROVIDER + "DeleteProvider", "catalog"),
    Action.CONNECTION_START: ActionInfo(
        "connection", _PROVIDER + "StartConnection", "OAuth authorization or API key link"
    ),
    Action.CONNECTION_COMPLETE: ActionInfo(
        "connection", _PROVIDER + "CompleteConnection", "authorization code exchanged"
    ),
    Action.CONNECTION_REFRESH: ActionInfo(
        "connection", None, "upstream tokens refreshed (RefreshConnection, or before a read)"
    ),
    Action.CONNECTION_DELETE: ActionInfo(
        "connection", _PROVIDER + "DeleteConnection", "credentials wiped, upstream revoked"
    ),
    Action.CREDENTIAL_READ: ActionInfo(
        "connection", _PROVIDER + "GetConnectionCredential", "an upstream credential read"
    ),
    Action.PROVIDERS_LIST: ActionInfo("provider", _PROVIDER + "ListProviders", "catalog read"),
    Action.CONNECTION_GET: ActionInfo("connection", _PROVIDER + "GetConnection", "read"),
    Action.CONNECTIONS_LIST: ActionInfo("connection", _PROVIDER + "ListConnections", "read"),
}

_BY_RPC = {info.rpc: action for action, info in REGISTRY.items() if info.rpc is not None}


def action_for_rpc(full_method: str) -> Action | None:
    return _BY_RPC.get(full_method)
