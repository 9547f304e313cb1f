"""A service account's access token: obtained, cached and renewed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, Self

import grpc

from keyhold.client.client_assertion import ClientAssertionSigner, PrivateKey
from keyhold.client.token_file import TokenFile
from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc


class Proof(Protocol):
    """How the account proves itself: the fields of a CreateServiceTokenRequest."""

    async def fields(self) -> dict[str, str]: ...


class _Secret:
    def __init__(self, client_id: str, client_secret: str) -> None:
        self._fields = {"client_id": client_id, "client_secret": client_secret}

    async def fields(self) -> dict[str, str]:
        return self._fields


class _Assertion:
    def __init__(self, client_id: str, signer: ClientAssertionSigner) -> None:
        self._client_id = client_id
        self._signer = signer

    async def fields(self) -> dict[str, str]:
        return {"client_id": self._client_id, "client_assertion": self._signer.sign()}


class _SubjectToken:
    def __init__(self, client_id: str, file: TokenFile) -> None:
        self._client_id = client_id
        self._file = file

    async def fields(self) -> dict[str, str]:
        return {"client_id": self._client_id, "subject_token": await self._file.current()}


class ServiceAccountCredentials:
    """Tokens for one service account, for `audience` (an API resource's; empty means
    Keyhold's own) with `scopes` (empty means all the account is granted there).

    `token()` returns a cached token until it is within `renew_before_seconds` of
    expiring (or past half its lifetime, if shorter); then exactly one
    CreateServiceToken request renews it, however many callers wait. The account
    proves itself by its client secret (`from_secret`, or the constructor), by an
    assertion signed with its private key (`from_private_key`), or by a token of an
    issuer Keyhold trusts, read from a file (`from_token_file`)."""

    def __init__(
        self,
        client_id: str = "",
        client_secret: str = "",
        scopes: Sequence[str] = (),
        *,
        audience: str = "",
        renew_before_seconds: float = 60.0,
        timeout_seconds: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
        proof: Proof | None = None,
    ) -> None:
        """`proof`: how the account proves itself, instead of `client_id` and
        `client_secret` (the alternative constructors below pass it)."""
        self._proof = proof or _Secret(client_id, client_secret)
        self._scopes = list(scopes)
        self._audience = audience
        self._renew_before = renew_before_seconds
        self._timeout = timeout_seconds
        self._monotonic = monotonic
        self._token = ""
        self._renew_at = 0.0
        self._lock: asyncio.Lock | None = None
        self._stub: Any = None
        self.requests = 0  # CreateServiceToken calls made, for observability

    @classmethod
    def from_secret(
        cls,
        client_id: str,
        client_secret: str,
        scopes: Sequence[str] = (),
        *,
        audience: str = "",
        renew_before_seconds: float = 60.0,
        timeout_seconds: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> Self:
        """The client-credentials grant: the account's id and secret on every renewal."""
        return cls(
            client_id,
            client_secret,
            scopes,
            audience=audience,
            renew_before_seconds=renew_before_seconds,
            timeout_seconds=timeout_seconds,
            monotonic=monotonic,
        )

    @classmethod
    def from_private_key(
        cls,
        client_id: str,
        private_key: bytes | str | PrivateKey,
        key_id: str,
        scopes: Sequence[str] = (),
        *,
        keyhold_issuer: str,
        audience: str = "",
        assertion_lifetime_seconds: int = 60,
        renew_before_seconds: float = 60.0,
        timeout_seconds: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> Self:
        """No shared secret: every renewal sends a fresh client assertion (RFC 7523)
        signed with `private_key` (unencrypted PEM, or a `cryptography` Ed25519, P-256
        or RSA private key), whose public half is registered on the account as
        `key_id`. `keyhold_issuer` is Keyhold's issuer (its `issuer` setting), which the
        assertion must name; `assertion_lifetime_seconds` must not exceed Keyhold's
        `client_assertion_max_seconds`. Raises ValueError for a key Keyhold would not
        accept."""
        signer = ClientAssertionSigner(
            client_id,
            private_key,
            key_id,
            keyhold_issuer,
            lifetime_seconds=assertion_lifetime_seconds,
        )
        return cls(
            scopes=scopes,
            audience=audience,
            renew_before_seconds=renew_before_seconds,
            timeout_seconds=timeout_seconds,
            monotonic=monotonic,
            proof=_Assertion(client_id, signer),
        )

    @classmethod
    def from_token_file(
        cls,
        path: Path | str,
        scopes: Sequence[str] = (),
        *,
        audience: str = "",
        client_id: str = "",
        renew_before_seconds: float = 60.0,
        timeout_seconds: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> Self:
        """A token of an issuer Keyhold trusts (a Kubernetes projected service-account
        token, a SPIFFE JWT-SVID), read from `path` and sent as `subject_token`;
        Keyhold maps its subject to the account, so `client_id` may stay empty. Each
        renewal sends the file's current content, read again only if the file changed
        since the last renewal (see `TokenFile`)."""
        return cls(
            scopes=scopes,
            audience=audience,
            renew_before_seconds=renew_before_seconds,
            timeout_seconds=timeout_seconds,
            monotonic=monotonic,
            proof=_SubjectToken(client_id, TokenFile(path)),
        )

    def bind(self, channel: grpc.aio.Channel) -> None:
        """The channel to Keyhold on which tokens are requested (without credentials)."""
        self._stub = pb_grpc.IdentityServiceStub(channel)

    async def token(self) -> str:
        if self._token and self._monotonic() < self._renew_at:
            return self._token
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._token and self._monotonic() < self._renew_at:
                return self._token
            await self._renew()
        return self._token

    async def _renew(self) -> None:
        if self._stub is None:
            raise RuntimeError("bind() the credentials to a channel to Keyhold first")
        request = pb.CreateServiceTokenRequest(
            scopes=self._scopes, audience=self._audience, **await self._proof.fields()
        )
        self.requests += 1
        response = await self._stub.CreateServiceToken(request, timeout=self._timeout)
        lifetime = max(response.access_token_expire_time.seconds - time.time(), 0.0)
        self._token = response.access_token
        self._renew_at = self._monotonic() + lifetime - min(self._renew_before, lifetime / 2)

    def invalidate(self, token: str | None = None) -> None:
        """Forget the cached token (after the server refused it). With `token`, only if
        the cached token is still that one: callers refused together renew it once."""
        if token is None or token == self._token:
            self._token = ""
            self._renew_at = 0.0
