"""UserRepository on SQL."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, bindparam, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.adapters.persistence.tables import users
from keyhold.domain.identity.users import EmailTaken, User, UserState

# Built once: a login and a refresh each look a user up (see sessions.py).
_BY_ID = select(users).where(users.c.id == bindparam("b_id"))
_BY_EMAIL = select(users).where(users.c.email == bindparam("b_email"))


def _user(row: Row[Any]) -> User:
    return User(
        id=row.id,
        email=row.email,
        display_name=row.display_name,
        password_hash=row.password_hash,
        email_verified=row.email_verified,
        state=UserState(row.state),
        roles=frozenset(json.loads(row.roles)),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _values(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "display_name": user.display_name,
        "password_hash": user.password_hash,
        "email_verified": user.email_verified,
        "state": user.state.value,
        "roles": json.dumps(sorted(user.roles)),
        "created_at": user.created_at,
        "updated_at": user.updated_at,
    }


class SqlUserRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def add(self, user: User) -> None:
        try:
            async with self._connection.begin_nested():
                await self._connection.execute(users.insert().values(**_values(user)))
        except IntegrityError as exc:
            raise EmailTaken(user.email) from exc

    async def get(self, user_id: str) -> User | None:
        row = (await self._connection.execute(_BY_ID, {"b_id": user_id})).first()
        return _user(row) if row else None

    async def by_email(self, email: str) -> User | None:
        row = (await self._connection.execute(_BY_EMAIL, {"b_email": email})).first()
        return _user(row) if row else None

    async def page(self, after: tuple[str, str] | None, limit: int) -> list[User]:
        query = select(users).order_by(users.c.created_at, users.c.id).limit(limit)
        if after is not None:
            created = datetime.fromisoformat(after[0])
            query = query.where(
                or_(
                    users.c.created_at > created,
                    and_(users.c.created_at == created, users.c.id > after[1]),
                )
            )
        return [_user(row) for row in await self._connection.execute(query)]

    async def update(self, user: User) -> None:
        values = _values(user)
        del values["id"], values["created_at"]
        await self._connection.execute(update(users).where(users.c.id == user.id).values(**values))

    async def delete(self, user_id: str) -> bool:
        result = await self._connection.execute(delete(users).where(users.c.id == user_id))
        return bool(result.rowcount)
