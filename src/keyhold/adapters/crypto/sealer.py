"""Sealer over the AES-256-GCM key ring; the context is the associated data."""

from __future__ import annotations

from keyhold.adapters.crypto.aead import AeadKeyRing, Sealed


class AeadSealer:
    def __init__(self, aead: AeadKeyRing) -> None:
        self._aead = aead

    @property
    def sealing_key_id(self) -> str:
        return self._aead.primary_key_id

    def seal(self, value: str, context: str) -> tuple[bytes, str]:
        sealed = self._aead.encrypt(value.encode(), context.encode())
        return sealed.blob, sealed.key_id

    def open(self, sealed: bytes, key_id: str, context: str) -> str:
        return self._aead.decrypt(Sealed(key_id, sealed), context.encode()).decode()
