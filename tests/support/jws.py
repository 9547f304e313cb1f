"""Other strings for one compact JWS: what the canonical-form rule must refuse."""

from __future__ import annotations

import base64

from keyhold.jose_canonical import P256_ORDER

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signature_s(token: str) -> int:
    """The S of an ES256 compact JWS's r ‖ s signature."""
    return int.from_bytes(base64.urlsafe_b64decode(token.rpartition(".")[2] + "==")[32:], "big")


def with_signature(token: str, signature_segment: str) -> str:
    return f"{token.rpartition('.')[0]}.{signature_segment}"


def high_s_twin(token: str) -> str:
    """The same ES256 token with its signature (r, s) re-encoded as (r, n - s): equally
    valid for the key, but another string."""
    signature = base64.urlsafe_b64decode(token.rpartition(".")[2] + "==")
    s = int.from_bytes(signature[32:], "big")
    return with_signature(token, _b64(signature[:32] + (P256_ORDER - s).to_bytes(32, "big")))


def altered_trailing_bits(segment: str) -> str:
    """`segment` with its last character's unused low bits set: the same bytes decoded."""
    unused_bits = {2: 4, 3: 2}[len(segment) % 4]
    index = _ALPHABET.index(segment[-1]) | ((1 << unused_bits) - 1)
    return segment[:-1] + _ALPHABET[index]
