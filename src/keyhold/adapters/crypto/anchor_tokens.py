"""Anchored checkpoints as signed JWS (`typ` keyhold-audit-anchor+jwt): what a witness
keeps. Signed through the CheckpointSigner port; read back with the public key their
`kid` names, the algorithm pinned to that key's, into the `Anchor` the domain compares
with the trail. An anchor whose signature or claims do not check out is refused, never
half-read."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import jwt

from keyhold.domain.audit.anchors import Anchor
from keyhold.domain.audit.ports import CheckpointSigner

ANCHOR_TYPE = "keyhold-audit-anchor+jwt"
_HASH_CLAIMS = ("head_hash", "first_hash", "previous")


class UnreadableAnchor(ValueError):
    """Not an anchor this key signed, or claims that are not an anchor's."""


def anchor_claims(anchor: Anchor) -> dict[str, object]:
    return {
        "typ": ANCHOR_TYPE,
        "seq": anchor.sequence,
        "head_hash": anchor.head_hash.hex(),
        "first_seq": anchor.first_sequence,
        "first_hash": anchor.first_hash.hex(),
        "previous": anchor.previous.hex(),
        "iat": int(anchor.time.timestamp()),
        "time": anchor.time.astimezone(UTC).isoformat(),
    }


def signed_anchor(anchor: Anchor, signer: CheckpointSigner) -> tuple[str, str]:
    """The anchor's JWS and the id of the key that signed it."""
    return signer.sign(anchor_claims(anchor))


def read_anchor(signed: str, keys: Mapping[str, tuple[Any, str]]) -> Anchor:
    """The anchor in `signed`, verified with the key its `kid` names among `keys`
    (key id → (public key, algorithm)). Raises UnreadableAnchor."""
    try:
        header = jwt.get_unverified_header(signed)
        key, algorithm = keys[str(header.get("kid"))]
        claims: dict[str, Any] = jwt.decode(
            signed, key, algorithms=[algorithm], options={"verify_iat": False}
        )
        if claims.get("typ") != ANCHOR_TYPE:
            raise UnreadableAnchor("not an audit anchor")
        hashes = {name: bytes.fromhex(str(claims[name])) for name in _HASH_CLAIMS}
        if any(len(value) != 32 for value in hashes.values()):
            raise UnreadableAnchor("a hash of the wrong length")
        return Anchor(
            sequence=int(claims["seq"]),
            head_hash=hashes["head_hash"],
            first_sequence=int(claims["first_seq"]),
            first_hash=hashes["first_hash"],
            time=datetime.fromisoformat(str(claims["time"])),
            previous=hashes["previous"],
        )
    except (jwt.PyJWTError, KeyError, ValueError, TypeError) as exc:
        if isinstance(exc, UnreadableAnchor):
            raise
        raise UnreadableAnchor(f"an unreadable anchor: {type(exc).__name__}") from exc
