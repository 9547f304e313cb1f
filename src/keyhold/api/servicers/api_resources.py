"""keyhold.identity.v1.ApiResourceService."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from keyhold.api.servicers.identity_messages import (
    role_grant_message,
    scope_grant_message,
    timestamp,
)
from keyhold.application.identity.account_keys import AccountKeys
from keyhold.application.identity.api_resources import ApiResources, Definition
from keyhold.application.identity.trusted_issuers import IssuerFields, TrustedIssuers
from keyhold.domain.errors import FieldViolation, InvalidArgument
from keyhold.domain.identity import DOMAIN
from keyhold.domain.identity.account_keys import AccountKey
from keyhold.domain.identity.api_resources import ApiResource
from keyhold.domain.identity.trusted_issuers import TrustedIssuer
from keyhold.identity.v1 import api_resource_service_pb2 as pb
from keyhold.identity.v1 import api_resource_service_pb2_grpc as pb_grpc


def resource_message(resource: ApiResource) -> pb.ApiResource:
    message = pb.ApiResource(
        name=resource.name,
        display_name=resource.display_name,
        audience=resource.audience,
        scopes=[pb.ApiScope(name=n, description=d) for n, d in resource.scopes.items()],
        roles=[pb.ApiRole(name=n, scopes=sorted(s)) for n, s in resource.roles.items()],
        built_in=resource.built_in,
    )
    if resource.created_at is not None:
        message.create_time.CopyFrom(timestamp(resource.created_at))
    if resource.updated_at is not None:
        message.update_time.CopyFrom(timestamp(resource.updated_at))
    return message


def _unique(pairs: Iterable[tuple[str, Any]], field: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, value in pairs:
        if name in found:
            raise InvalidArgument(
                "API_RESOURCE_INVALID",
                "the API resource's definition is not valid",
                [FieldViolation(field, f"{name[:128]!r} appears twice")],
                domain=DOMAIN,
            )
        found[name] = value
    return found


def definition_of(resource: pb.ApiResource) -> Definition:
    scopes: Mapping[str, str] = _unique(
        ((scope.name, scope.description) for scope in resource.scopes), "api_resource.scopes"
    )
    roles: Mapping[str, frozenset[str]] = _unique(
        ((role.name, frozenset(role.scopes)) for role in resource.roles), "api_resource.roles"
    )
    return Definition(resource.display_name, resource.audience, scopes, roles)


def key_message(key: AccountKey) -> pb.ServiceAccountKey:
    return pb.ServiceAccountKey(
        name=key.name,
        key_id=key.key.key_id,
        algorithm=key.key.algorithm,
        public_jwk=key.key.public_jwk,
        create_time=timestamp(key.created_at),
    )


def issuer_message(issuer: TrustedIssuer) -> pb.TrustedIssuer:
    return pb.TrustedIssuer(
        name=issuer.name,
        issuer=issuer.issuer,
        jwks_url=issuer.jwks_url,
        jwks_json=issuer.jwks_json,
        audience=issuer.audience,
        mappings=[
            pb.WorkloadIdentityMapping(
                subject_pattern=mapping.pattern.text,
                service_account=f"service-accounts/{mapping.account_id}",
            )
            for mapping in issuer.mappings
        ],
        create_time=timestamp(issuer.created_at),
    )


class ApiResourceServicer(pb_grpc.ApiResourceServiceServicer):
    def __init__(self, resources: ApiResources, keys: AccountKeys, issuers: TrustedIssuers) -> None:
        self._resources = resources
        self._keys = keys
        self._issuers = issuers

    async def CreateApiResource(
        self, request: pb.CreateApiResourceRequest, context: Any
    ) -> pb.CreateApiResourceResponse:
        resource = await self._resources.create(
            request.api_resource_id, definition_of(request.api_resource)
        )
        return pb.CreateApiResourceResponse(api_resource=resource_message(resource))

    async def GetApiResource(
        self, request: pb.GetApiResourceRequest, context: Any
    ) -> pb.GetApiResourceResponse:
        resource = await self._resources.get(request.name)
        return pb.GetApiResourceResponse(api_resource=resource_message(resource))

    async def ListApiResources(
        self, request: pb.ListApiResourcesRequest, context: Any
    ) -> pb.ListApiResourcesResponse:
        found, token = await self._resources.page(request.page_size, request.page_token)
        return pb.ListApiResourcesResponse(
            api_resources=[resource_message(resource) for resource in found],
            next_page_token=token,
        )

    async def UpdateApiResource(
        self, request: pb.UpdateApiResourceRequest, context: Any
    ) -> pb.UpdateApiResourceResponse:
        resource = await self._resources.update(
            request.api_resource.name,
            definition_of(request.api_resource),
            list(request.update_mask.paths),
        )
        return pb.UpdateApiResourceResponse(api_resource=resource_message(resource))

    async def DeleteApiResource(
        self, request: pb.DeleteApiResourceRequest, context: Any
    ) -> pb.DeleteApiResourceResponse:
        await self._resources.delete(request.name, request.force)
        return pb.DeleteApiResourceResponse()

    async def GrantServiceAccountScopes(
        self, request: pb.GrantServiceAccountScopesRequest, context: Any
    ) -> pb.GrantServiceAccountScopesResponse:
        grant = await self._resources.grant_scopes(
            request.service_account, request.api_resource, list(request.scopes)
        )
        return pb.GrantServiceAccountScopesResponse(grant=scope_grant_message(grant))

    async def RevokeServiceAccountScopes(
        self, request: pb.RevokeServiceAccountScopesRequest, context: Any
    ) -> pb.RevokeServiceAccountScopesResponse:
        grant = await self._resources.revoke_scopes(
            request.service_account, request.api_resource, list(request.scopes)
        )
        return pb.RevokeServiceAccountScopesResponse(grant=scope_grant_message(grant))

    async def GrantUserRoles(
        self, request: pb.GrantUserRolesRequest, context: Any
    ) -> pb.GrantUserRolesResponse:
        grant = await self._resources.grant_roles(
            request.user, request.api_resource, list(request.roles)
        )
        return pb.GrantUserRolesResponse(grant=role_grant_message(grant))

    async def RevokeUserRoles(
        self, request: pb.RevokeUserRolesRequest, context: Any
    ) -> pb.RevokeUserRolesResponse:
        grant = await self._resources.revoke_roles(
            request.user, request.api_resource, list(request.roles)
        )
        return pb.RevokeUserRolesResponse(grant=role_grant_message(grant))

    async def SetTokenExchangeGrant(
        self, request: pb.SetTokenExchangeGrantRequest, context: Any
    ) -> pb.SetTokenExchangeGrantResponse:
        grant = await self._resources.set_exchange_grant(
            request.service_account, request.api_resource, list(request.delegable_scopes)
        )
        return pb.SetTokenExchangeGrantResponse(
            grant=pb.TokenExchangeGrant(
                service_account=request.service_account,
                api_resource=grant.resource.name,
                audience=grant.resource.audience,
                delegable_scopes=sorted(grant.held),
            )
        )

    async def DeleteTokenExchangeGrant(
        self, request: pb.DeleteTokenExchangeGrantRequest, context: Any
    ) -> pb.DeleteTokenExchangeGrantResponse:
        await self._resources.delete_exchange_grant(request.service_account, request.api_resource)
        return pb.DeleteTokenExchangeGrantResponse()

    async def AddServiceAccountKey(
        self, request: pb.AddServiceAccountKeyRequest, context: Any
    ) -> pb.AddServiceAccountKeyResponse:
        added = await self._keys.add(request.parent, request.public_jwk)
        return pb.AddServiceAccountKeyResponse(key=key_message(added))

    async def ListServiceAccountKeys(
        self, request: pb.ListServiceAccountKeysRequest, context: Any
    ) -> pb.ListServiceAccountKeysResponse:
        found, token = await self._keys.page(request.parent, request.page_size, request.page_token)
        return pb.ListServiceAccountKeysResponse(
            keys=[key_message(key) for key in found], next_page_token=token
        )

    async def DeleteServiceAccountKey(
        self, request: pb.DeleteServiceAccountKeyRequest, context: Any
    ) -> pb.DeleteServiceAccountKeyResponse:
        await self._keys.delete(request.name)
        return pb.DeleteServiceAccountKeyResponse()

    async def CreateTrustedIssuer(
        self, request: pb.CreateTrustedIssuerRequest, context: Any
    ) -> pb.CreateTrustedIssuerResponse:
        given = request.trusted_issuer
        created = await self._issuers.create(
            request.trusted_issuer_id,
            IssuerFields(given.issuer, given.audience, given.jwks_url, given.jwks_json),
        )
        return pb.CreateTrustedIssuerResponse(trusted_issuer=issuer_message(created))

    async def ListTrustedIssuers(
        self, request: pb.ListTrustedIssuersRequest, context: Any
    ) -> pb.ListTrustedIssuersResponse:
        found, token = await self._issuers.page(request.page_size, request.page_token)
        return pb.ListTrustedIssuersResponse(
            trusted_issuers=[issuer_message(issuer) for issuer in found], next_page_token=token
        )

    async def DeleteTrustedIssuer(
        self, request: pb.DeleteTrustedIssuerRequest, context: Any
    ) -> pb.DeleteTrustedIssuerResponse:
        await self._issuers.delete(request.name)
        return pb.DeleteTrustedIssuerResponse()

    async def MapWorkloadIdentity(
        self, request: pb.MapWorkloadIdentityRequest, context: Any
    ) -> pb.MapWorkloadIdentityResponse:
        mapping = request.mapping
        issuer = await self._issuers.map(
            request.trusted_issuer, mapping.subject_pattern, mapping.service_account
        )
        return pb.MapWorkloadIdentityResponse(trusted_issuer=issuer_message(issuer))

    async def UnmapWorkloadIdentity(
        self, request: pb.UnmapWorkloadIdentityRequest, context: Any
    ) -> pb.UnmapWorkloadIdentityResponse:
        issuer = await self._issuers.unmap(request.trusted_issuer, request.subject_pattern)
        return pb.UnmapWorkloadIdentityResponse(trusted_issuer=issuer_message(issuer))
