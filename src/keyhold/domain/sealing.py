"""Encryption at rest, as a port: values sealed for one context open only in it."""

from __future__ import annotations

from typing import Protocol

from keyhold.domain.errors import FailedPrecondition


class SealedValueUnreadable(FailedPrecondition):
    """A value sealed at rest does not open: its ciphertext was altered or moved to another
    row, or the key that sealed it is no longer configured. Nothing recovers it; whoever
    owns it must set it again."""

    def __init__(self, where: dict[str, str] | None = None) -> None:
        """`where`: the row that does not open, for the operator re-sealing the vault."""
        super().__init__(
            "CREDENTIAL_UNREADABLE",
            "a stored credential cannot be decrypted; it must be set again",
            domain="keyhold.provider",
            metadata=where,
        )


class Sealer(Protocol):
    @property
    def sealing_key_id(self) -> str:
        """The id of the key that `seal` seals with now."""
        ...

    def seal(self, value: str, context: str) -> tuple[bytes, str]:
        """The ciphertext and the id of the key that sealed it."""
        ...

    def open(self, sealed: bytes, key_id: str, context: str) -> str:
        """The value sealed for `context`; SealedValueUnreadable when it does not open."""
        ...
