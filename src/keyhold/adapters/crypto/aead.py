"""AES-256-GCM encryption at rest with a ring of key-encryption keys.

The newest key encrypts; every key decrypts, so keys rotate without downtime. Each
ciphertext records the id of the key that sealed it, and callers bind it to its row
with associated data so that ciphertexts cannot be swapped between rows.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyhold.adapters.private_files import private_directory, private_file, write_private_file
from keyhold.domain.sealing import SealedValueUnreadable

_NONCE_BYTES = 12
_KEY_BYTES = 32
KEY_FILE_NAME = "encryption-keys"


class KeyConfigurationError(ValueError):
    """The configured encryption keys are malformed."""


@dataclass(frozen=True, slots=True)
class Sealed:
    key_id: str
    blob: bytes  # nonce ‖ ciphertext ‖ tag


class AeadKeyRing:
    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise KeyConfigurationError("at least one encryption key is required")
        self._ciphers: dict[str, AESGCM] = {}
        for key_id, key in keys:
            if len(key) != _KEY_BYTES:
                raise KeyConfigurationError(f"encryption key {key_id!r} must be 32 bytes")
            self._ciphers[key_id] = AESGCM(key)
        self.primary_key_id = keys[-1][0]

    @classmethod
    def parse(cls, spec: str) -> AeadKeyRing:
        """Keys as `id:base64key,id:base64key`; the last one encrypts."""
        keys: list[tuple[str, bytes]] = []
        for item in filter(None, (part.strip() for part in spec.replace("\n", ",").split(","))):
            key_id, sep, encoded = item.partition(":")
            if not sep or not (key_id.isascii() and key_id.isalnum()):
                raise KeyConfigurationError("each key must be `id:base64`, id alphanumeric")
            try:
                keys.append((key_id, base64.b64decode(encoded, validate=True)))
            except binascii.Error as exc:
                raise KeyConfigurationError(f"encryption key {key_id!r} is not base64") from exc
        return cls(keys)

    @classmethod
    def load_or_create(cls, key_dir: Path) -> AeadKeyRing:
        """Read the key file in `key_dir`, creating it with one key if absent. The
        directory is kept 0700 and the file 0600, tightened if found looser."""
        path = key_dir / KEY_FILE_NAME
        private_directory(key_dir)
        if path.exists():
            private_file(path)
        else:
            line = f"k{secrets.token_hex(4)}:{base64.b64encode(os.urandom(_KEY_BYTES)).decode()}\n"
            write_private_file(path, line)
        return cls.parse(path.read_text())

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> Sealed:
        nonce = os.urandom(_NONCE_BYTES)
        cipher = self._ciphers[self.primary_key_id]
        return Sealed(
            self.primary_key_id, nonce + cipher.encrypt(nonce, plaintext, associated_data)
        )

    def decrypt(self, sealed: Sealed, associated_data: bytes) -> bytes:
        """The plaintext; SealedValueUnreadable when the blob was altered, truncated or
        sealed for other associated data, or its key is not in the ring."""
        cipher = self._ciphers.get(sealed.key_id)
        if cipher is None or len(sealed.blob) < _NONCE_BYTES:
            raise SealedValueUnreadable
        nonce, body = sealed.blob[:_NONCE_BYTES], sealed.blob[_NONCE_BYTES:]
        try:
            return cipher.decrypt(nonce, body, associated_data)
        except InvalidTag as exc:
            raise SealedValueUnreadable from exc
