"""The in-memory signing key ring: keys parsed once, replaced atomically on reload."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import (
    EllipticCurvePrivateKey,
    EllipticCurvePublicKey,
)

from keyhold.domain.errors import Unavailable
from keyhold.domain.signing_keys import SigningKey

# Keys held at most, the newest: rotations faster than tokens expire could otherwise
# grow the ring without bound. A token signed by a key past it is refused as signed by
# an unknown key, and its holder logs in again.
MAX_RING_KEYS = 100


@dataclass(frozen=True, slots=True)
class LoadedKey:
    key_id: str
    algorithm: str
    private_key: EllipticCurvePrivateKey
    public_key: EllipticCurvePublicKey
    is_active: bool


class KeyRing:
    """Holds every key that may still verify a live token; the newest active one signs.

    `reload` fetches the keys from their store; `reload_if_stale` does so at most once
    per `min_reload_interval`, so a flood of tokens with unknown key ids cannot turn
    into a flood of database reads.
    """

    def __init__(
        self,
        fetch: Callable[[], Awaitable[list[SigningKey]]],
        min_reload_interval: float = 5.0,
    ) -> None:
        self._fetch = fetch
        self._min_reload_interval = min_reload_interval
        self._keys: dict[str, LoadedKey] = {}
        self._signer: LoadedKey | None = None
        self._last_reload = float("-inf")
        self._lock = asyncio.Lock()

    def replace(self, keys: list[SigningKey]) -> None:
        if len(keys) > MAX_RING_KEYS:
            keys = sorted(keys, key=lambda k: k.created_at)[-MAX_RING_KEYS:]
        loaded: dict[str, LoadedKey] = {}
        for key in keys:
            known = self._keys.get(key.key_id)
            if known is not None and known.is_active == key.is_active:
                loaded[key.key_id] = known
                continue
            private_key = serialization.load_pem_private_key(key.private_key_pem, password=None)
            if not isinstance(private_key, EllipticCurvePrivateKey):
                raise TypeError(f"signing key {key.key_id} is not an EC key")
            loaded[key.key_id] = LoadedKey(
                key.key_id, key.algorithm, private_key, private_key.public_key(), key.is_active
            )
        active = [k for k in keys if k.is_active]
        self._keys = loaded
        self._signer = loaded[max(active, key=lambda k: k.created_at).key_id] if active else None

    async def reload(self) -> None:
        async with self._lock:
            await self._reload_locked()

    async def reload_if_stale(self) -> bool:
        """Reload unless that happened within the interval; True if it reloaded."""
        async with self._lock:
            if time.monotonic() - self._last_reload < self._min_reload_interval:
                return False
            await self._reload_locked()
            return True

    async def _reload_locked(self) -> None:
        self._last_reload = time.monotonic()
        self.replace(await self._fetch())

    @property
    def signer(self) -> LoadedKey:
        if self._signer is None:
            raise Unavailable(
                "NO_SIGNING_KEY", "no signing key is available", domain="keyhold.identity"
            )
        return self._signer

    def get(self, key_id: str) -> LoadedKey | None:
        return self._keys.get(key_id)

    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)
