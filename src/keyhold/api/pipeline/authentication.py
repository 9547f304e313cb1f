"""Authentication: the bearer token in `authorization` metadata becomes the principal,
and the connection's TLS properties become the call's transport identity."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Protocol

from keyhold.api.policy import MethodPolicy
from keyhold.domain.call import TransportIdentity
from keyhold.domain.errors import Unauthenticated
from keyhold.domain.principal import ANONYMOUS, Principal

_DOMAIN = "keyhold.identity"
MAX_AUTHORIZATION_LENGTH = 8 * 1024


class UnusableAuthorization:
    """`authorization` metadata that no token can be: sent more than once (which one
    counts would depend on who reads it), or longer than `MAX_AUTHORIZATION_LENGTH`.
    Refused on every method, public or not, before anything parses it or looks it up."""

    __slots__ = ("message", "reason")

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message

    def error(self) -> Unauthenticated:
        return Unauthenticated(self.reason, self.message, domain=_DOMAIN)


AMBIGUOUS = UnusableAuthorization(
    "CREDENTIALS_AMBIGUOUS", "send `authorization` metadata once, not several times"
)
TOO_LARGE = UnusableAuthorization(
    "TOKEN_TOO_LARGE", f"authorization is longer than {MAX_AUTHORIZATION_LENGTH} characters"
)
Authorization = str | UnusableAuthorization | None


def authorization_of(
    metadata: Mapping[str, str | bytes], entries: Collection[tuple[str, str | bytes]]
) -> Authorization:
    """The `authorization` value of a call whose metadata `entries` made `metadata`
    (later entries overriding earlier ones): None when there is none. `entries` are
    counted only when `metadata` has fewer keys than there are entries, which a call
    with every key once never pays for."""
    value = metadata.get("authorization")
    if not isinstance(value, str):
        return None
    if len(metadata) != len(entries) and _sent_more_than_once(entries):
        return AMBIGUOUS
    if len(value) > MAX_AUTHORIZATION_LENGTH:
        return TOO_LARGE
    return value


def _sent_more_than_once(entries: Collection[tuple[str, str | bytes]]) -> bool:
    return sum(1 for key, _ in entries if key == "authorization") > 1


class TokenVerifier(Protocol):
    async def verify(self, token: str) -> Principal: ...

    def principal_without_waiting(self, token: str) -> Principal | None:
        """What `verify` would return, when that needs no waiting; else None."""
        ...


def _bearer_token_or_none(header: str) -> str | None:
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _bearer_token(header: str) -> str:
    token = _bearer_token_or_none(header)
    if token is None:
        raise Unauthenticated(
            "CREDENTIALS_MALFORMED", "authorization must be `Bearer <token>`", domain=_DOMAIN
        )
    return token


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


# One shared identity per kind of transport without a client certificate. gRPC names the
# kind ("insecure", "ssl", "local"); past this many, an identity is made per call.
_KINDS_KEPT = 8
_WITHOUT_CERTIFICATE: dict[bytes, TransportIdentity] = {}


def transport_identity(auth_context: Mapping[str, Iterable[bytes]]) -> TransportIdentity:
    """The identity gRPC established for the connection (`ServicerContext.auth_context()`).

    gRPC sets the `x509_*` properties only for a client certificate that passed
    verification against the server's client CA.
    """
    security_type = next(iter(auth_context.get("transport_security_type", ())), b"")
    if "x509_pem_cert" not in auth_context:  # the common case: one shared value per kind
        known = _WITHOUT_CERTIFICATE.get(security_type)
        if known is None:
            known = TransportIdentity(_text(security_type))
            if len(_WITHOUT_CERTIFICATE) < _KINDS_KEPT:
                known = _WITHOUT_CERTIFICATE.setdefault(security_type, known)
        return known
    return TransportIdentity(
        security_type=_text(security_type),
        client_certificate=True,
        common_name=_text(next(iter(auth_context.get("x509_common_name", ())), b"")),
        subject_alternative_names=tuple(
            map(_text, auth_context.get("x509_subject_alternative_name", ()))
        ),
    )


class Authenticator:
    def __init__(self, verifier: TokenVerifier) -> None:
        self._verifier = verifier

    def caller_without_waiting(
        self, policy: MethodPolicy, authorization: Authorization
    ) -> Principal | None:
        """The caller, when it is established without waiting (no token on a public
        method, or a token verified before whose session is known live); None when
        `authenticate` must be awaited, which also gives every refusal."""
        if authorization is None:
            return ANONYMOUS if policy.public else None
        if isinstance(authorization, UnusableAuthorization):
            return None
        token = _bearer_token_or_none(authorization)
        return None if token is None else self._verifier.principal_without_waiting(token)

    async def authenticate(self, policy: MethodPolicy, authorization: Authorization) -> Principal:
        if isinstance(authorization, UnusableAuthorization):
            raise authorization.error()
        if policy.public:
            return await self._optional(authorization)
        if authorization is None:
            raise Unauthenticated(
                "CREDENTIALS_MISSING", "this method needs a bearer token", domain=_DOMAIN
            )
        return await self._verifier.verify(_bearer_token(authorization))

    async def _optional(self, authorization: str | None) -> Principal:
        """On public methods a valid token names the caller; anything else is anonymous."""
        if authorization is None:
            return ANONYMOUS
        try:
            return await self._verifier.verify(_bearer_token(authorization))
        except Unauthenticated:
            return ANONYMOUS
