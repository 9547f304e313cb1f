"""One string per JWS: the canonical encodings a compact JWS must use to be accepted.

A JWS could otherwise be presented under several strings that all verify: base64url
with `=` padding or with non-zero unused trailing bits decodes to the same bytes, and an
ECDSA signature (r, s) is equally valid as (r, n - s). Caches and replay sets keyed by
the token's string would count those as different tokens. So a segment must be
unpadded base64url whose unused bits are zero, and an ES256 signature must carry the
low S (s <= n/2, as in BIP 62); the signer normalises its S the same way.

Shared by the server and the client library: imports only the standard library.
"""

from __future__ import annotations

import base64
import binascii
import re

# The order n of the P-256 group (SEC 2, secp256r1).
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_HALF_ORDER = P256_ORDER // 2
_ES256_SIGNATURE_BYTES = 64
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


class NotBase64url(ValueError):
    """Not base64url at all (a character outside the alphabet, an impossible length)."""


class NotCanonical(ValueError):
    """Well-formed, but not the one encoding a JWS must use."""


def decode_segment(text: str) -> bytes:
    """The bytes of an unpadded base64url segment (RFC 7515 §2). Raises NotCanonical for
    padding or non-zero unused trailing bits, NotBase64url for anything else."""
    if "=" in text:
        raise NotCanonical("base64url segment is padded")
    if len(text) % 4 == 1 or not _B64URL.fullmatch(text):
        raise NotBase64url("not a base64url segment")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise NotBase64url("not a base64url segment") from exc
    if encode_segment(data) != text:
        raise NotCanonical("base64url segment has non-zero unused bits")
    return data


def encode_segment(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def es256_has_low_s(signature: bytes) -> bool:
    """Whether a raw r ‖ s ES256 signature (RFC 7518 §3.4) is 64 bytes with s <= n/2."""
    if len(signature) != _ES256_SIGNATURE_BYTES:
        return False
    return int.from_bytes(signature[32:], "big") <= _HALF_ORDER


def es256_low_s(signature: bytes) -> bytes:
    """The same ES256 signature with its S in the low half (s' = n - s when high)."""
    if len(signature) != _ES256_SIGNATURE_BYTES:
        raise ValueError("an ES256 signature is 64 bytes")
    s = int.from_bytes(signature[32:], "big")
    if s <= _HALF_ORDER:
        return signature
    return signature[:32] + (P256_ORDER - s).to_bytes(32, "big")


def with_low_s(compact_jws: str) -> str:
    """An ES256 compact JWS with its signature's S normalised to the low half."""
    signing_input, _, signature = compact_jws.rpartition(".")
    return f"{signing_input}.{encode_segment(es256_low_s(decode_segment(signature)))}"
