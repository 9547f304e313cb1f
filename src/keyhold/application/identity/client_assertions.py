"""A client assertion (RFC 7523 `private_key_jwt`) standing in for a service account's
secret: signed by a key registered on the account, saying what
`domain/identity/client_assertions.py` requires, and never presented before.

The keys of recent assertions are kept by (client id, kid) so that a steady caller's
assertion costs one statement: the one that confirms the key is still registered and
records the assertion's jti. A kept key that was removed makes that statement find
nothing, and the assertion is refused; nothing kept is trusted on its own."""

from __future__ import annotations

from datetime import UTC, datetime

from keyhold.domain.bounded import BoundedMap
from keyhold.domain.clock import Clock
from keyhold.domain.errors import Unauthenticated
from keyhold.domain.identity import DOMAIN
from keyhold.domain.identity.account_keys import KEY_ID, AccountKeyLookup, PublicKey
from keyhold.domain.identity.client_assertions import (
    AssertionChecks,
    AssertionRules,
    accepted_assertion,
    replayed,
)
from keyhold.domain.identity.service_accounts import ServiceAccount


def invalid_client() -> Unauthenticated:
    # One answer for an unknown client and a wrong credential.
    return Unauthenticated("INVALID_CLIENT", "the client credentials are wrong", domain=DOMAIN)


def _key_unknown() -> Unauthenticated:
    return Unauthenticated(
        "KEY_UNKNOWN", "the assertion names no key of this account", domain=DOMAIN
    )


class ClientAssertions:
    def __init__(
        self,
        keys: AccountKeyLookup,
        checks: AssertionChecks,
        rules: AssertionRules,
        clock: Clock,
        *,
        capacity: int = 4096,
    ) -> None:
        """`capacity` bounds the (client id, kid) → key entries kept."""
        self._keys = keys
        self._checks = checks
        self._rules = rules
        self._clock = clock
        self._known: BoundedMap[tuple[str, str], PublicKey] = BoundedMap(capacity)

    async def account(self, client_id: str, assertion: str) -> ServiceAccount:
        """The account `client_id` names, if `assertion` proves it."""
        header = self._checks.header(assertion)
        key_id = header.get("kid")
        named = key_id if isinstance(key_id, str) and KEY_ID.match(key_id) else ""
        key = self._known.get((client_id, named))
        claims = None
        if key is not None:
            try:
                claims = self._checks.claims(assertion, key)
            except Unauthenticated:  # perhaps signed by a key registered since, same kid
                self._known.pop((client_id, named))
        if key is None or claims is None:
            key = await self._registered_key(client_id, named)
            claims = self._checks.claims(assertion, key)
        accepted = accepted_assertion(
            header, claims, client_id, self._rules, self._clock.timestamp()
        )
        expires_at = datetime.fromtimestamp(accepted.expires_at, UTC)
        used = await self._keys.first_use(client_id, key, accepted.token_id, expires_at)
        if used is None:  # the key was removed (or the account) since it was kept
            self._known.pop((client_id, named))
            raise _key_unknown()
        account, fresh = used
        if not fresh:
            raise replayed()
        return account

    async def _registered_key(self, client_id: str, key_id: str) -> PublicKey:
        found = await self._keys.account_with_key(client_id, key_id)
        if found is None:
            raise invalid_client()
        _, key = found
        if key is None:
            raise _key_unknown()
        self._known.put((client_id, key_id), key)
        return key
