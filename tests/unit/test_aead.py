"""Encryption at rest: AES-256-GCM with a key ring and associated data."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from keyhold.adapters.crypto.aead import AeadKeyRing, KeyConfigurationError, Sealed
from keyhold.domain.sealing import SealedValueUnreadable


def _spec(*ids: str) -> str:
    return ",".join(f"{i}:{base64.b64encode(os.urandom(32)).decode()}" for i in ids)


def test_round_trip_and_ciphertext_hides_plaintext() -> None:
    ring = AeadKeyRing.parse(_spec("k1"))
    sealed = ring.encrypt(b"refresh-token-secret", b"row-1")
    assert b"refresh-token-secret" not in sealed.blob
    assert ring.decrypt(sealed, b"row-1") == b"refresh-token-secret"


def test_associated_data_binds_the_ciphertext_to_its_row() -> None:
    ring = AeadKeyRing.parse(_spec("k1"))
    sealed = ring.encrypt(b"secret", b"row-1")
    with pytest.raises(SealedValueUnreadable):
        ring.decrypt(sealed, b"row-2")


@pytest.mark.parametrize(
    "alter",
    [
        lambda blob: blob[:-1] + bytes([blob[-1] ^ 1]),  # a flipped tag bit
        lambda blob: bytes([blob[0] ^ 1]) + blob[1:],  # a flipped nonce bit
        lambda blob: blob[:20],  # truncated into the tag
        lambda blob: blob[:5],  # shorter than a nonce
        lambda blob: b"",
        lambda blob: blob + b"\x00",
    ],
    ids=["tag", "nonce", "truncated", "no-nonce", "empty", "extended"],
)
def test_an_altered_ciphertext_is_unreadable_not_a_crash(alter: object) -> None:
    ring = AeadKeyRing.parse(_spec("k1"))
    sealed = ring.encrypt(b"secret", b"row-1")
    with pytest.raises(SealedValueUnreadable) as caught:
        ring.decrypt(Sealed(sealed.key_id, alter(sealed.blob)), b"row-1")  # type: ignore[operator]
    assert (caught.value.code, caught.value.reason) == (9, "CREDENTIAL_UNREADABLE")


def test_a_ciphertext_under_a_key_no_longer_configured_is_unreadable() -> None:
    sealed = AeadKeyRing.parse(_spec("k1")).encrypt(b"secret", b"row-1")
    with pytest.raises(SealedValueUnreadable):
        AeadKeyRing.parse(_spec("k2")).decrypt(sealed, b"row-1")


def test_newest_key_encrypts_and_old_keys_still_decrypt() -> None:
    old_spec = _spec("k1")
    old = AeadKeyRing.parse(old_spec)
    sealed = old.encrypt(b"secret", b"ad")
    rotated = AeadKeyRing.parse(old_spec + "," + _spec("k2"))
    assert rotated.primary_key_id == "k2"
    assert rotated.encrypt(b"x", b"ad").key_id == "k2"
    assert rotated.decrypt(sealed, b"ad") == b"secret"


@pytest.mark.parametrize(
    "spec",
    ["", "k1", "k1:notbase64!", "k-1:" + "A" * 44, "k1:" + base64.b64encode(b"short").decode()],
)
def test_malformed_key_configuration_is_refused(spec: str) -> None:
    with pytest.raises(KeyConfigurationError):
        AeadKeyRing.parse(spec)


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    first = AeadKeyRing.load_or_create(tmp_path / "keys")
    path = tmp_path / "keys" / "encryption-keys"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = AeadKeyRing.load_or_create(tmp_path / "keys")
    assert second.decrypt(first.encrypt(b"s", b"a"), b"a") == b"s"
