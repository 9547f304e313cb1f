"""Encryption at rest, as a port: values sealed for one context open only in it."""

from __future__ import annotations

from typing import Protocol


class Sealer(Protocol):
    def seal(self, value: str, context: str) -> tuple[bytes, str]:
        """The ciphertext and the id of the key that sealed it."""
        ...

    def open(self, sealed: bytes, key_id: str, context: str) -> str: ...
