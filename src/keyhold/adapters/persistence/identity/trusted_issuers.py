"""TrustedIssuerRepository on SQL: an issuer row and its subject mappings."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Row, Select, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.adapters.persistence.tables import trusted_issuers, workload_identities
from keyhold.domain.identity.trusted_issuers import TrustedIssuer, issuer_exists
from keyhold.domain.identity.workload_identity import SubjectPattern, WorkloadMapping

_T = trusted_issuers.c
_W = workload_identities.c


class SqlTrustedIssuerRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def add(self, issuer: TrustedIssuer) -> None:
        try:
            async with self._connection.begin_nested():
                await self._connection.execute(
                    trusted_issuers.insert().values(
                        id=issuer.id,
                        issuer=issuer.issuer,
                        jwks_url=issuer.jwks_url,
                        jwks_json=issuer.jwks_json,
                        audience=issuer.audience,
                        created_at=issuer.created_at,
                    )
                )
        except IntegrityError as exc:
            raise issuer_exists(f"{issuer.name} or {issuer.issuer}") from exc

    async def get(self, issuer_id: str) -> TrustedIssuer | None:
        found = await self._with_mappings(select(trusted_issuers).where(_T.id == issuer_id))
        return found[0] if found else None

    async def by_issuer(self, issuer: str) -> TrustedIssuer | None:
        found = await self._with_mappings(select(trusted_issuers).where(_T.issuer == issuer))
        return found[0] if found else None

    async def page(self, after_id: str, limit: int) -> list[TrustedIssuer]:
        query = select(trusted_issuers).where(_T.id > after_id).order_by(_T.id).limit(limit)
        return await self._with_mappings(query)

    async def delete(self, issuer_id: str) -> bool:
        # The mappings go with it (ON DELETE CASCADE), also on SQLite, whose
        # connections turn foreign keys on.
        result = await self._connection.execute(delete(trusted_issuers).where(_T.id == issuer_id))
        return bool(result.rowcount)

    async def map(self, issuer_id: str, mapping: WorkloadMapping) -> None:
        pattern = mapping.pattern.text
        await self._connection.execute(
            delete(workload_identities).where(
                _W.issuer_id == issuer_id, _W.subject_pattern == pattern
            )
        )
        await self._connection.execute(
            workload_identities.insert().values(
                issuer_id=issuer_id, subject_pattern=pattern, account_id=mapping.account_id
            )
        )

    async def unmap(self, issuer_id: str, pattern: str) -> bool:
        result = await self._connection.execute(
            delete(workload_identities).where(
                _W.issuer_id == issuer_id, _W.subject_pattern == pattern
            )
        )
        return bool(result.rowcount)

    async def _with_mappings(self, query: Select[Any]) -> list[TrustedIssuer]:
        rows = list(await self._connection.execute(query))
        if not rows:
            return []
        ids = [row.id for row in rows]
        mapped = await self._connection.execute(
            select(workload_identities)
            .where(_W.issuer_id.in_(ids))
            .order_by(_W.issuer_id, _W.subject_pattern)
        )
        by_issuer: dict[str, list[Row[Any]]] = defaultdict(list)
        for row in mapped:
            by_issuer[row.issuer_id].append(row)
        return [_issuer(row, by_issuer[row.id]) for row in rows]


def _issuer(row: Row[Any], mappings: Iterable[Row[Any]]) -> TrustedIssuer:
    return TrustedIssuer(
        id=row.id,
        issuer=row.issuer,
        jwks_url=row.jwks_url,
        jwks_json=row.jwks_json,
        audience=row.audience,
        created_at=row.created_at,
        mappings=tuple(
            WorkloadMapping(row.issuer, SubjectPattern(m.subject_pattern), m.account_id)
            for m in mappings
        ),
    )
