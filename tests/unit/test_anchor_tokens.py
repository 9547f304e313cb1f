"""Anchors survive the trip through a signed JWS exactly, and a forged, re-signed or
malformed one is refused."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from keyhold.adapters.crypto.anchor_tokens import (
    UnreadableAnchor,
    read_anchor,
    signed_anchor,
)
from keyhold.domain.audit.anchors import next_anchor


class Signer:
    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())

    def sign(self, claims: dict[str, object]) -> tuple[str, str]:
        return jwt.encode(claims, self.key, "ES256", {"kid": "c1"}), "c1"

    def keys(self) -> dict[str, tuple[Any, str]]:
        return {"c1": (self.key.public_key(), "ES256")}


def _anchor() -> Any:
    head = (42, hashlib.sha256(b"42").digest())
    first = (1, hashlib.sha256(b"1").digest())
    return next_anchor(None, head, first, datetime(2026, 12, 5, 1, 2, 3, 456789, tzinfo=UTC))


def test_an_anchor_reads_back_as_it_was_signed() -> None:
    signer, anchor = Signer(), _anchor()
    signed, key_id = signed_anchor(anchor, signer)
    assert key_id == "c1"
    read = read_anchor(signed, signer.keys())
    assert read == anchor
    assert read.digest() == anchor.digest()


def test_a_forged_or_foreign_anchor_is_refused() -> None:
    signer, anchor = Signer(), _anchor()
    signed, _ = signed_anchor(anchor, signer)
    stranger = Signer()
    resigned, _ = signed_anchor(anchor, stranger)  # the same claims, another key
    header, payload, signature = signed.split(".")
    tampered = f"{header}.{payload[:-2]}AA.{signature}"
    for bad in (resigned, tampered, "not.a.jws", jwt.encode({"typ": "x"}, "k" * 32, "HS256")):
        with pytest.raises(UnreadableAnchor):
            read_anchor(bad, signer.keys())
