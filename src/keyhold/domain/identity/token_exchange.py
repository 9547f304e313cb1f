"""Token exchange (RFC 8693): what a token minted for a service acting on a user's
behalf may carry (docs/security.md).

- Scopes: at most what the user's roles grant at the target resource and the acting
  service may delegate there; none asked for means all of those.
- Actors: the token names the acting service before the subject token's own actors
  (the most recent first, as the nested `act` claim of RFC 8693 §4.1 has them), up to
  a depth.
- Lifetime: never past the subject token's own expiry (the issuer's `not_after`)."""

from __future__ import annotations

from keyhold.domain.errors import PermissionDenied
from keyhold.domain.identity import DOMAIN


def exchanged_scopes(
    asked: frozenset[str], granted_by_roles: frozenset[str], delegable: frozenset[str]
) -> frozenset[str]:
    allowed = granted_by_roles & delegable
    missing = asked - allowed
    if missing or not (asked or allowed):
        listed = ", ".join(sorted(missing)[:10]) or "no scope is both held and delegable"
        raise PermissionDenied(
            "SCOPE_NOT_GRANTED", f"not granted for this exchange: {listed}", domain=DOMAIN
        )
    return asked or allowed


def delegated_chain(subject_chain: tuple[str, ...], actor: str, max_depth: int) -> tuple[str, ...]:
    """The actors of a token exchanged by `actor` for a subject token that named
    `subject_chain` (empty when the subject acted for itself), the most recent first."""
    if len(subject_chain) + 1 > max_depth:
        raise PermissionDenied(
            "DELEGATION_TOO_DEEP",
            f"a token may pass through at most {max_depth} services",
            domain=DOMAIN,
        )
    return (actor, *subject_chain)
