"""Managing the signing key ring: the first key, rotation, and what to publish."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Set
from datetime import timedelta
from typing import Protocol

from keyhold.application.audit.recorder import AuditRecorder
from keyhold.application.identity.revocations import SIGNING_KEY
from keyhold.domain.audit.actions import Action
from keyhold.domain.clock import Clock
from keyhold.domain.signing_keys import SigningKey, SigningKeyGenerator, SigningKeyRepository
from keyhold.domain.tokens import ReplicaNotices
from keyhold.domain.unit_of_work import UnitOfWorkFactory


class SigningKeys:
    """`publish_window`: how long a retired key keeps verifying, i.e. the longest
    lifetime of a token it signed (plus leeway)."""

    def __init__(
        self,
        unit_of_work: UnitOfWorkFactory,
        generator: SigningKeyGenerator,
        clock: Clock,
        publish_window: timedelta,
    ) -> None:
        self._unit_of_work = unit_of_work
        self._generator = generator
        self._clock = clock
        self._publish_window = publish_window

    async def verifiable(self) -> list[SigningKey]:
        """Every key that may still verify a live token, oldest first."""
        async with self._unit_of_work() as uow:
            return await self._verifiable(uow.signing_keys)

    async def _verifiable(self, keys: SigningKeyRepository) -> list[SigningKey]:
        return await keys.list_verifiable(self._clock.now() - self._publish_window)

    async def ensure_signer(self) -> list[SigningKey]:
        """Create the first signing key if there is no active one; return the ring.
        Replicas starting together on an empty database make one key between them."""
        keys = await self.verifiable()
        if any(key.is_active for key in keys):
            return keys
        async with self._unit_of_work() as uow:
            await uow.signing_keys.hold_ring()
            if not any(key.is_active for key in await self._verifiable(uow.signing_keys)):
                await uow.signing_keys.add(self._generator.generate(self._clock.now()))
        return await self.verifiable()

    async def rotate(self) -> SigningKey:
        """Retire the active key(s) and make a new one the signer."""
        now = self._clock.now()
        key = self._generator.generate(now)
        async with self._unit_of_work() as uow:
            await uow.signing_keys.hold_ring()
            await uow.signing_keys.retire_active(now)
            await uow.signing_keys.add(key)
        return key


class RingInUse(Protocol):
    """The keys this process verifies and signs with."""

    def key_ids(self) -> Set[str]: ...

    def replace(self, keys: list[SigningKey]) -> None: ...


class PublishedKeys:
    """GetJwks: the keys that may verify a live token. This process's ring is brought
    in step with them, so that it never publishes a key it does not verify with."""

    def __init__(self, keys: SigningKeys, ring: RingInUse) -> None:
        self._keys = keys
        self._ring = ring

    async def current(self) -> list[SigningKey]:
        keys = await self._keys.verifiable()
        if self._ring.key_ids() != {key.key_id for key in keys}:
            self._ring.replace(keys)
        return keys


class SigningKeyRotation:
    """RotateSigningKey and `keyhold keys rotate`: audited, and the ring reloaded."""

    def __init__(
        self,
        keys: SigningKeys,
        recorder: AuditRecorder,
        reload_ring: Callable[[], Awaitable[None]],
        notices: ReplicaNotices,
    ) -> None:
        self._keys = keys
        self._recorder = recorder
        self._reload_ring = reload_ring
        self._notices = notices

    async def rotate(self) -> str:
        async with self._recorder.attempt(Action.SIGNING_KEY_ROTATE) as attempt:
            key = await self._keys.rotate()
            attempt.resource_name = f"signing-keys/{key.key_id}"
            await self._reload_ring()
            # Other replicas reload their rings and sign with the new key too.
            await self._notices.publish(SIGNING_KEY, [key.key_id])
        return key.key_id
