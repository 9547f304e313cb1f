"""ProviderRepository in memory."""

from __future__ import annotations

from dataclasses import replace

from keyhold.domain.provider.providers import Provider, ProviderExists, SealedClientSecret
from tests.support.fakes.store import IntegrityViolation, ProviderRow, Transaction


def _provider(row: ProviderRow) -> Provider:
    return replace(row.provider, has_client_secret=row.secret_ciphertext is not None)


class InMemoryProviderRepository:
    def __init__(self, transaction: Transaction) -> None:
        self._tx = transaction

    async def add(
        self, provider: Provider, sealed_secret: bytes | None, secret_key_id: str
    ) -> None:
        if provider.slug in self._tx.providers:
            raise ProviderExists(provider.slug)
        self._tx.providers.put(provider.slug, ProviderRow(provider, sealed_secret, secret_key_id))

    async def get(self, slug: str) -> Provider | None:
        row = self._tx.providers.get(slug)
        return _provider(row) if row else None

    async def client_secret(self, slug: str) -> SealedClientSecret | None:
        row = self._tx.providers.get(slug)
        if row is None or row.secret_ciphertext is None:
            return None
        return SealedClientSecret(
            row.secret_ciphertext, row.secret_key_id, row.provider.secret_origin
        )

    async def page(self, after: str | None, limit: int) -> list[Provider]:
        rows = sorted(self._tx.providers.items())
        return [_provider(row) for slug, row in rows if after is None or slug > after][:limit]

    async def update(
        self, provider: Provider, sealed_secret: bytes | None, secret_key_id: str
    ) -> None:
        row = self._tx.providers.get(provider.slug)
        if row is None:
            return  # an UPDATE that matches no row
        kept = replace(provider, created_at=row.provider.created_at)
        if sealed_secret is None:
            self._tx.providers.put(provider.slug, replace(row, provider=kept))
        else:
            self._tx.providers.put(provider.slug, ProviderRow(kept, sealed_secret, secret_key_id))

    async def delete(self, slug: str) -> bool:
        if await self.has_connections(slug):
            raise IntegrityViolation(f"providers/{slug} has connections")
        return self._tx.providers.delete(slug)

    async def has_connections(self, slug: str) -> bool:
        return any(row.connection.provider == slug for row in self._tx.connections.values())
