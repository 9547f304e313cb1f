"""keyhold.provider.v1.ProviderService."""

from __future__ import annotations

from typing import Any, Protocol

from keyhold.api.servicers.identity_messages import timestamp
from keyhold.application.provider.catalog import ProviderCatalog, ProviderFields
from keyhold.application.provider.connections import Connections
from keyhold.domain.provider.connections import Connection, ConnectionState
from keyhold.domain.provider.providers import AuthType, Provider
from keyhold.provider.v1 import provider_service_pb2 as pb
from keyhold.provider.v1 import provider_service_pb2_grpc as pb_grpc

_AUTH_TYPES = {AuthType.OAUTH2: pb.AUTH_TYPE_OAUTH2, AuthType.API_KEY: pb.AUTH_TYPE_API_KEY}
_AUTH_TYPES_BY_NUMBER = {number: kind for kind, number in _AUTH_TYPES.items()}
_STATES = {
    ConnectionState.PENDING: pb.CONNECTION_STATE_PENDING,
    ConnectionState.ACTIVE: pb.CONNECTION_STATE_ACTIVE,
    ConnectionState.NEEDS_REAUTH: pb.CONNECTION_STATE_NEEDS_REAUTH,
    ConnectionState.REVOKED: pb.CONNECTION_STATE_REVOKED,
}


def provider_message(provider: Provider) -> pb.Provider:
    return pb.Provider(
        name=provider.name,
        display_name=provider.display_name,
        auth_type=_AUTH_TYPES[provider.auth_type],
        authorization_endpoint=provider.authorization_endpoint,
        token_endpoint=provider.token_endpoint,
        revocation_endpoint=provider.revocation_endpoint,
        client_id=provider.client_id,
        default_scopes=list(provider.default_scopes),
        has_client_secret=provider.has_client_secret,
        create_time=timestamp(provider.created_at),
        update_time=timestamp(provider.updated_at),
        redirect_uris=list(provider.redirect_uris),
    )


def connection_message(connection: Connection) -> pb.Connection:
    message = pb.Connection(
        name=connection.name,
        user=f"users/{connection.user_id}",
        provider=f"providers/{connection.provider}",
        state=_STATES[connection.state],
        scopes=list(connection.scopes),
        create_time=timestamp(connection.created_at),
        update_time=timestamp(connection.updated_at),
    )
    if connection.expires_at is not None:
        message.expire_time.CopyFrom(timestamp(connection.expires_at))
    if connection.last_refresh_at is not None:
        message.last_refresh_time.CopyFrom(timestamp(connection.last_refresh_at))
    return message


def _fields(provider: pb.Provider) -> ProviderFields:
    return ProviderFields(
        display_name=provider.display_name,
        auth_type=_AUTH_TYPES_BY_NUMBER.get(provider.auth_type),
        authorization_endpoint=provider.authorization_endpoint,
        token_endpoint=provider.token_endpoint,
        revocation_endpoint=provider.revocation_endpoint,
        client_id=provider.client_id,
        default_scopes=tuple(provider.default_scopes),
        redirect_uris=tuple(provider.redirect_uris),
    )


class ProviderUseCases(Protocol):
    """What ProviderService serves: the provider context's use cases."""

    @property
    def catalog(self) -> ProviderCatalog: ...

    @property
    def connections(self) -> Connections: ...


class ProviderServicer(pb_grpc.ProviderServiceServicer):
    def __init__(self, use_cases: ProviderUseCases) -> None:
        self._uc = use_cases

    async def ListProviders(
        self, request: pb.ListProvidersRequest, context: Any
    ) -> pb.ListProvidersResponse:
        providers, token = await self._uc.catalog.page(request.page_size, request.page_token)
        return pb.ListProvidersResponse(
            providers=[provider_message(p) for p in providers], next_page_token=token
        )

    async def CreateProvider(
        self, request: pb.CreateProviderRequest, context: Any
    ) -> pb.CreateProviderResponse:
        provider = await self._uc.catalog.create(
            request.provider_id, _fields(request.provider), request.client_secret
        )
        return pb.CreateProviderResponse(provider=provider_message(provider))

    async def UpdateProvider(
        self, request: pb.UpdateProviderRequest, context: Any
    ) -> pb.UpdateProviderResponse:
        provider = await self._uc.catalog.update(
            request.provider.name,
            _fields(request.provider),
            list(request.update_mask.paths),
            request.client_secret,
        )
        return pb.UpdateProviderResponse(provider=provider_message(provider))

    async def DeleteProvider(
        self, request: pb.DeleteProviderRequest, context: Any
    ) -> pb.DeleteProviderResponse:
        await self._uc.catalog.delete(request.name)
        return pb.DeleteProviderResponse()

    async def StartConnection(
        self, request: pb.StartConnectionRequest, context: Any
    ) -> pb.StartConnectionResponse:
        connection, url = await self._uc.connections.start(
            request.provider, request.redirect_uri, list(request.scopes), request.api_key
        )
        return pb.StartConnectionResponse(
            connection=connection_message(connection), authorization_url=url
        )

    async def CompleteConnection(
        self, request: pb.CompleteConnectionRequest, context: Any
    ) -> pb.CompleteConnectionResponse:
        connection = await self._uc.connections.complete(request.state, request.code)
        return pb.CompleteConnectionResponse(connection=connection_message(connection))

    async def GetConnection(
        self, request: pb.GetConnectionRequest, context: Any
    ) -> pb.GetConnectionResponse:
        connection = await self._uc.connections.get(request.name)
        return pb.GetConnectionResponse(connection=connection_message(connection))

    async def ListConnections(
        self, request: pb.ListConnectionsRequest, context: Any
    ) -> pb.ListConnectionsResponse:
        connections, token = await self._uc.connections.page(
            request.parent, request.page_size, request.page_token
        )
        return pb.ListConnectionsResponse(
            connections=[connection_message(c) for c in connections], next_page_token=token
        )

    async def RefreshConnection(
        self, request: pb.RefreshConnectionRequest, context: Any
    ) -> pb.RefreshConnectionResponse:
        connection = await self._uc.connections.refresh(request.name)
        return pb.RefreshConnectionResponse(connection=connection_message(connection))

    async def GetConnectionCredential(
        self, request: pb.GetConnectionCredentialRequest, context: Any
    ) -> pb.GetConnectionCredentialResponse:
        credential = await self._uc.connections.credential(request.name)
        response = pb.GetConnectionCredentialResponse(
            access_token=credential.value,
            auth_type=_AUTH_TYPES[credential.auth_type],
            token_type=credential.token_type,
        )
        if credential.expires_at is not None:
            response.expire_time.CopyFrom(timestamp(credential.expires_at))
        return response

    async def DeleteConnection(
        self, request: pb.DeleteConnectionRequest, context: Any
    ) -> pb.DeleteConnectionResponse:
        await self._uc.connections.delete(request.name)
        return pb.DeleteConnectionResponse()
