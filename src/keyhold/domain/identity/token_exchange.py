"""Token exchange (RFC 8693): what a token minted for a service acting on a user's
behalf may carry (docs/plans/fleet-authorization.md).

- Scopes: at most what the user's roles grant at the target resource and the acting
  service may delegate there; none asked for means all of those.
- Actors: the `act` claim names the acting service, and nests the subject token's own
  `act` inside it (the most recent actor outermost, RFC 8693 §4.1), up to a depth.
- Lifetime: never past the subject token's own expiry."""

from __future__ import annotations

from collections.abc import Mapping

from keyhold.domain.errors import PermissionDenied, Unauthenticated
from keyhold.domain.identity import DOMAIN

ActClaim = Mapping[str, object]
# Nesting read from a token is bounded before it is walked: a hostile subject token
# cannot make the check itself deep.
_MAX_READ_DEPTH = 16


def exchanged_scopes(
    asked: frozenset[str], granted_by_roles: frozenset[str], delegable: frozenset[str]
) -> frozenset[str]:
    allowed = granted_by_roles & delegable
    missing = asked - allowed
    if missing:
        raise PermissionDenied(
            "SCOPE_NOT_GRANTED",
            f"not granted for this exchange: {', '.join(sorted(missing)[:10])}",
            domain=DOMAIN,
        )
    return asked or allowed


def act_depth(act: object) -> int:
    """How many actors an `act` claim names; a malformed claim is refused."""
    depth = 0
    while act is not None:
        if not isinstance(act, Mapping) or not isinstance(act.get("sub"), str):
            raise _malformed_act()
        depth += 1
        if depth > _MAX_READ_DEPTH:
            raise _malformed_act()
        act = act.get("act")
    return depth


def delegated_act(subject_act: object, actor: str, max_depth: int) -> dict[str, object]:
    """The `act` claim of a token exchanged by `actor` for a subject token whose own
    `act` is `subject_act` (None when the subject acted for itself)."""
    if act_depth(subject_act) + 1 > max_depth:
        raise PermissionDenied(
            "DELEGATION_TOO_DEEP",
            f"a token may pass through at most {max_depth} services",
            domain=DOMAIN,
        )
    claim: dict[str, object] = {"sub": actor}
    if subject_act is not None:
        claim["act"] = subject_act
    return claim


def exchanged_expiry(subject_expires_at: int, now: int, lifetime_seconds: int) -> int:
    """When the exchanged token expires: its usual lifetime, cut at the subject's expiry."""
    if subject_expires_at <= now:
        raise Unauthenticated(
            "SUBJECT_TOKEN_INVALID", "the subject token has expired", domain=DOMAIN
        )
    return min(now + lifetime_seconds, subject_expires_at)


def _malformed_act() -> Unauthenticated:
    return Unauthenticated(
        "SUBJECT_TOKEN_INVALID", "the subject token's act claim is malformed", domain=DOMAIN
    )
