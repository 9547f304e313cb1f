"""keyhold.identity.v1.IdentityService."""

from __future__ import annotations

import json
from typing import Any, Protocol, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from keyhold.api.servicers.identity_messages import (
    STATES_BY_NUMBER,
    role_grant_message,
    scope_grant_message,
    service_account_message,
    session_message,
    timestamp,
    user_message,
)
from keyhold.application.identity.api_resources import ApiResources, Grant
from keyhold.application.identity.introspection import TokenIntrospection
from keyhold.application.identity.passwords import Passwords
from keyhold.application.identity.service_accounts import ServiceAccounts
from keyhold.application.identity.sessions import Sessions, SessionTokens
from keyhold.application.identity.signing_keys import PublishedKeys, SigningKeyRotation
from keyhold.application.identity.token_exchange import TokenExchange
from keyhold.application.identity.token_revocation import TokenRevocation
from keyhold.application.identity.users import UserPatch, Users
from keyhold.application.identity.verification import EmailVerification
from keyhold.domain.call import current_call
from keyhold.domain.principal import Principal, PrincipalType
from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc

_SUBJECT_TYPES = {
    PrincipalType.USER: pb.SUBJECT_TYPE_USER,
    PrincipalType.SERVICE: pb.SUBJECT_TYPE_SERVICE,
}


class IdentityUseCases(Protocol):
    """What IdentityService serves: the identity context's use cases."""

    @property
    def users(self) -> Users: ...

    @property
    def sessions(self) -> Sessions: ...

    @property
    def passwords(self) -> Passwords: ...

    @property
    def verification(self) -> EmailVerification: ...

    @property
    def published_keys(self) -> PublishedKeys: ...

    @property
    def rotation(self) -> SigningKeyRotation: ...

    @property
    def service_accounts(self) -> ServiceAccounts: ...

    @property
    def introspection(self) -> TokenIntrospection: ...

    @property
    def api_resources(self) -> ApiResources: ...

    @property
    def token_exchange(self) -> TokenExchange: ...

    @property
    def token_revocation(self) -> TokenRevocation: ...


def _session_fields(result: SessionTokens) -> dict[str, Any]:
    return {
        "session": session_message(result.session),
        "access_token": result.access_token.token,
        "refresh_token": result.refresh_token,
        "access_token_expire_time": Timestamp(seconds=result.access_token.expires_at),
    }


_Described = TypeVar("_Described", pb.WhoAmIResponse, pb.IntrospectTokenResponse)


def _described(message_type: type[_Described], principal: Principal, **more: Any) -> _Described:
    """What WhoAmI and IntrospectToken both say about a principal, in one constructor
    call: no field dictionary, no Timestamp copied in."""
    message = message_type(
        subject=principal.subject,
        subject_type=_SUBJECT_TYPES.get(principal.type, pb.SUBJECT_TYPE_UNSPECIFIED),
        roles=sorted(principal.roles),
        scopes=sorted(principal.scopes),
        session=f"sessions/{principal.session_id}" if principal.session_id else "",
        audience=principal.audience,
        actor_chain=principal.actor_chain,
        **more,
    )
    if principal.expires_at is not None:
        message.expire_time.seconds = principal.expires_at
    return message


class IdentityServicer(pb_grpc.IdentityServiceServicer):
    def __init__(self, use_cases: IdentityUseCases) -> None:
        self._uc = use_cases

    async def CreateUser(
        self, request: pb.CreateUserRequest, context: Any
    ) -> pb.CreateUserResponse:
        user = await self._uc.users.register(request.email, request.password, request.display_name)
        return (
            pb.CreateUserResponse()
            if user is None
            else pb.CreateUserResponse(user=user_message(user))
        )

    async def GetUser(self, request: pb.GetUserRequest, context: Any) -> pb.GetUserResponse:
        user = await self._uc.users.get(request.name)
        message = user_message(user)
        grants = await self._uc.api_resources.user_grants(user.id)
        message.role_grants.extend(role_grant_message(grant) for grant in grants)
        return pb.GetUserResponse(user=message)

    async def ListUsers(self, request: pb.ListUsersRequest, context: Any) -> pb.ListUsersResponse:
        users, token = await self._uc.users.page(request.page_size, request.page_token)
        return pb.ListUsersResponse(users=[user_message(u) for u in users], next_page_token=token)

    async def UpdateUser(
        self, request: pb.UpdateUserRequest, context: Any
    ) -> pb.UpdateUserResponse:
        patch = UserPatch(
            display_name=request.user.display_name,
            roles=tuple(request.user.roles),
            state=STATES_BY_NUMBER.get(request.user.state),
        )
        user = await self._uc.users.update(
            request.user.name, patch, list(request.update_mask.paths)
        )
        return pb.UpdateUserResponse(user=user_message(user))

    async def DeleteUser(
        self, request: pb.DeleteUserRequest, context: Any
    ) -> pb.DeleteUserResponse:
        await self._uc.users.delete(request.name)
        return pb.DeleteUserResponse()

    async def CreateEmailVerification(
        self, request: pb.CreateEmailVerificationRequest, context: Any
    ) -> pb.CreateEmailVerificationResponse:
        token, expires_at = await self._uc.verification.create(request.name)
        return pb.CreateEmailVerificationResponse(
            verification_token=token, expire_time=timestamp(expires_at)
        )

    async def VerifyEmail(
        self, request: pb.VerifyEmailRequest, context: Any
    ) -> pb.VerifyEmailResponse:
        user = await self._uc.verification.verify(request.verification_token)
        return pb.VerifyEmailResponse(user=user_message(user))

    async def CreateSession(
        self, request: pb.CreateSessionRequest, context: Any
    ) -> pb.CreateSessionResponse:
        result = await self._uc.sessions.login(request.email, request.password, request.user_agent)
        return pb.CreateSessionResponse(**_session_fields(result))

    async def RefreshSession(
        self, request: pb.RefreshSessionRequest, context: Any
    ) -> pb.RefreshSessionResponse:
        result = await self._uc.sessions.refresh(request.refresh_token)
        return pb.RefreshSessionResponse(**_session_fields(result))

    async def RevokeToken(
        self, request: pb.RevokeTokenRequest, context: Any
    ) -> pb.RevokeTokenResponse:
        await self._uc.token_revocation.revoke(request.token)
        return pb.RevokeTokenResponse()

    async def ListSessions(
        self, request: pb.ListSessionsRequest, context: Any
    ) -> pb.ListSessionsResponse:
        sessions, token = await self._uc.sessions.page(
            request.parent, request.page_size, request.page_token
        )
        return pb.ListSessionsResponse(
            sessions=[session_message(s) for s in sessions], next_page_token=token
        )

    async def DeleteSession(
        self, request: pb.DeleteSessionRequest, context: Any
    ) -> pb.DeleteSessionResponse:
        await self._uc.sessions.delete(request.name)
        return pb.DeleteSessionResponse()

    async def ChangePassword(
        self, request: pb.ChangePasswordRequest, context: Any
    ) -> pb.ChangePasswordResponse:
        await self._uc.passwords.change(request.current_password, request.new_password)
        return pb.ChangePasswordResponse()

    async def CreatePasswordReset(
        self, request: pb.CreatePasswordResetRequest, context: Any
    ) -> pb.CreatePasswordResetResponse:
        token, expires_at = await self._uc.passwords.create_reset(request.email)
        response = pb.CreatePasswordResetResponse(reset_token=token)
        if expires_at:
            response.expire_time.CopyFrom(timestamp(expires_at))
        return response

    async def ResetPassword(
        self, request: pb.ResetPasswordRequest, context: Any
    ) -> pb.ResetPasswordResponse:
        await self._uc.passwords.reset(request.reset_token, request.new_password)
        return pb.ResetPasswordResponse()

    async def CreateServiceAccount(
        self, request: pb.CreateServiceAccountRequest, context: Any
    ) -> pb.CreateServiceAccountResponse:
        account, secret = await self._uc.service_accounts.create(
            request.display_name, list(request.scopes)
        )
        return pb.CreateServiceAccountResponse(
            service_account=service_account_message(account), client_secret=secret
        )

    async def ListServiceAccounts(
        self, request: pb.ListServiceAccountsRequest, context: Any
    ) -> pb.ListServiceAccountsResponse:
        accounts, token = await self._uc.service_accounts.page(
            request.page_size, request.page_token
        )
        grants = await self._uc.api_resources.account_grants([a.id for a in accounts])
        keyhold = self._uc.api_resources.built_in()
        messages = []
        for account in accounts:
            message = service_account_message(account)
            held = [Grant(keyhold, account.scopes)] if account.scopes else []
            held += grants.get(account.id, [])
            message.grants.extend(scope_grant_message(grant) for grant in held)
            messages.append(message)
        return pb.ListServiceAccountsResponse(service_accounts=messages, next_page_token=token)

    async def DeleteServiceAccount(
        self, request: pb.DeleteServiceAccountRequest, context: Any
    ) -> pb.DeleteServiceAccountResponse:
        await self._uc.service_accounts.delete(request.name)
        return pb.DeleteServiceAccountResponse()

    async def CreateServiceToken(
        self, request: pb.CreateServiceTokenRequest, context: Any
    ) -> pb.CreateServiceTokenResponse:
        issued = await self._uc.service_accounts.issue_token(
            request.client_id,
            request.client_secret,
            list(request.scopes),
            request.audience,
            request.client_assertion,
            request.subject_token,
        )
        return pb.CreateServiceTokenResponse(
            access_token=issued.token.token,
            access_token_expire_time=Timestamp(seconds=issued.token.expires_at),
            scopes=sorted(issued.scopes),
            audience=issued.audience,
        )

    async def UpdateServiceAccount(
        self, request: pb.UpdateServiceAccountRequest, context: Any
    ) -> pb.UpdateServiceAccountResponse:
        account = await self._uc.service_accounts.update(
            request.service_account.name,
            request.service_account.display_name,
            request.service_account.refuses_secrets,
            list(request.update_mask.paths),
        )
        return pb.UpdateServiceAccountResponse(service_account=service_account_message(account))

    async def ExchangeToken(
        self, request: pb.ExchangeTokenRequest, context: Any
    ) -> pb.ExchangeTokenResponse:
        exchanged = await self._uc.token_exchange.exchange(
            request.subject_token, request.audience, list(request.scopes)
        )
        return pb.ExchangeTokenResponse(
            access_token=exchanged.token.token,
            access_token_expire_time=Timestamp(seconds=exchanged.token.expires_at),
            scopes=sorted(exchanged.scopes),
            audience=exchanged.audience,
        )

    async def IntrospectToken(
        self, request: pb.IntrospectTokenRequest, context: Any
    ) -> pb.IntrospectTokenResponse:
        principal = await self._uc.introspection.introspect(request.token)
        if principal is None:
            return pb.IntrospectTokenResponse(active=False)
        response = _described(
            pb.IntrospectTokenResponse, principal, active=True, token_id=principal.token_id or ""
        )
        if principal.issued_at is not None:
            response.issue_time.seconds = principal.issued_at
        return response

    async def GetJwks(self, request: pb.GetJwksRequest, context: Any) -> pb.GetJwksResponse:
        keys = await self._uc.published_keys.current()
        jwks = [key.public_jwk for key in keys]
        return pb.GetJwksResponse(
            keys=[
                pb.JsonWebKey(
                    key_id=jwk["kid"],
                    key_type=jwk["kty"],
                    curve=jwk["crv"],
                    x=jwk["x"],
                    y=jwk.get("y", ""),
                    algorithm=jwk["alg"],
                    use=jwk["use"],
                )
                for jwk in jwks
            ],
            jwks_json=json.dumps({"keys": jwks}, sort_keys=True),
        )

    async def RotateSigningKey(
        self, request: pb.RotateSigningKeyRequest, context: Any
    ) -> pb.RotateSigningKeyResponse:
        return pb.RotateSigningKeyResponse(key_id=await self._uc.rotation.rotate())

    async def WhoAmI(self, request: pb.WhoAmIRequest, context: Any) -> pb.WhoAmIResponse:
        return _described(pb.WhoAmIResponse, current_call().principal)
