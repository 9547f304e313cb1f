"""Re-encrypting everything sealed at rest under the newest key-encryption key, so an
old key can be retired: `keyhold keys rotate-vault`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Table, select, update

from keyhold.adapters.persistence.database import Database
from keyhold.adapters.persistence.identity import signing_keys as signing_key_rows
from keyhold.adapters.persistence.provider import connections as connection_rows
from keyhold.adapters.persistence.tables import connections, providers, signing_keys
from keyhold.application.provider.catalog import secret_context
from keyhold.domain.sealing import SealedValueUnreadable, Sealer


@dataclass(frozen=True, slots=True)
class _SealedColumns:
    table: Table
    key_column: str
    columns: tuple[str, ...]  # ciphertext columns sealed with the row's key id
    context: Callable[[str, str], str]  # (row's primary key, field) → sealing context


_SEALED = (
    _SealedColumns(
        signing_keys,
        "encryption_key_id",
        ("private_key_ciphertext",),
        lambda key_id, _: signing_key_rows.sealing_context(key_id),
    ),
    _SealedColumns(
        providers, "secret_key_id", ("secret_ciphertext",), lambda slug, _: secret_context(slug)
    ),
    _SealedColumns(
        connections,
        "credential_key_id",
        (
            "access_token_ciphertext",
            "refresh_token_ciphertext",
            "api_key_ciphertext",
            "verifier_ciphertext",
        ),
        connection_rows.sealing_context,
    ),
)


async def reseal_all(database: Database, sealer: Sealer) -> int:
    """Re-seal every value not already under the sealer's current key; how many rows.
    Every key that sealed a value must still open it."""
    current = sealer.sealing_key_id
    resealed = 0
    async with database.transaction() as connection:
        for spec in _SEALED:
            key_column = spec.table.c[spec.key_column]
            id_column = next(iter(spec.table.primary_key.columns))
            rows = await connection.execute(
                select(spec.table).where(key_column != current).with_for_update()
                if database.is_postgres
                else select(spec.table).where(key_column != current)
            )
            for row in rows.mappings().all():
                row_id = row[id_column.name]
                values: dict[str, object] = {spec.key_column: current}
                for column in spec.columns:
                    blob = row[column]
                    if blob is None:
                        continue
                    context = spec.context(row_id, column.removesuffix("_ciphertext"))
                    try:
                        plain = sealer.open(blob, row[spec.key_column], context)
                    except SealedValueUnreadable as exc:  # the whole reseal rolls back
                        where = {"table": spec.table.name, "id": str(row_id)}
                        raise SealedValueUnreadable(where) from exc
                    values[column], _ = sealer.seal(plain, context)
                await connection.execute(
                    update(spec.table).where(id_column == row_id).values(**values)
                )
                resealed += 1
    return resealed
