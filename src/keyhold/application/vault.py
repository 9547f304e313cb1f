"""Re-encrypting every secret sealed at rest under the newest key-encryption key (so an
old one can be retired), recorded in the audit trail like any other key operation."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from keyhold.application.audit.recorder import AuditRecorder
from keyhold.domain.audit.actions import Action


class VaultRotation:
    def __init__(self, reseal: Callable[[], Awaitable[int]], recorder: AuditRecorder) -> None:
        self._reseal = reseal
        self._recorder = recorder

    async def reseal(self) -> int:
        """How many sealed rows were re-encrypted."""
        async with self._recorder.attempt(Action.VAULT_RESEAL, "vault") as attempt:
            count = await self._reseal()
            attempt.details["resealed_rows"] = str(count)
        return count
