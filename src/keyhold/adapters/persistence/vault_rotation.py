"""Re-encrypting everything sealed at rest under the newest key-encryption key, so an
old key can be retired: `keyhold keys rotate-vault`."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Table, select, update

from keyhold.adapters.crypto.aead import Sealed
from keyhold.adapters.persistence.database import Database
from keyhold.adapters.persistence.tables import connections, providers, signing_keys
from keyhold.domain.sealing import SealedValueUnreadable


@dataclass(frozen=True, slots=True)
class _SealedColumns:
    table: Table
    key_column: str
    columns: tuple[str, ...]  # ciphertext columns sealed with the row's key id
    context: str  # associated data, formatted with the row's primary key and column


_SEALED = (
    _SealedColumns(
        signing_keys, "encryption_key_id", ("private_key_ciphertext",), "keyhold/signing-key/{id}"
    ),
    _SealedColumns(
        providers, "secret_key_id", ("secret_ciphertext",), "keyhold/provider/{id}/client_secret"
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
        "keyhold/connection/{id}/{field}",
    ),
)


async def reseal_all(database: Database) -> int:
    """Re-encrypt every sealed value not already under the newest key; how many rows."""
    aead = database.aead
    primary = aead.primary_key_id
    resealed = 0
    async with database.transaction() as connection:
        for spec in _SEALED:
            key_column = spec.table.c[spec.key_column]
            id_column = next(iter(spec.table.primary_key.columns))
            rows = await connection.execute(
                select(spec.table).where(key_column != primary).with_for_update()
                if database.is_postgres
                else select(spec.table).where(key_column != primary)
            )
            for row in rows.mappings().all():
                values: dict[str, object] = {spec.key_column: primary}
                for column in spec.columns:
                    blob = row[column]
                    if blob is None:
                        continue
                    field = column.removesuffix("_ciphertext")
                    context = spec.context.format(id=row[id_column.name], field=field).encode()
                    try:
                        plain = aead.decrypt(Sealed(row[spec.key_column], blob), context)
                    except SealedValueUnreadable as exc:  # the whole reseal rolls back
                        where = {"table": spec.table.name, "id": str(row[id_column.name])}
                        raise SealedValueUnreadable(where) from exc
                    values[column] = aead.encrypt(plain, context).blob
                await connection.execute(
                    update(spec.table).where(id_column == row[id_column.name]).values(**values)
                )
                resealed += 1
    return resealed
