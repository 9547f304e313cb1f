"""The public keys a service account signs its client assertions with: registered,
listed and removed by admins, each change audited."""

from __future__ import annotations

from keyhold.application.audit.recorder import AuditRecorder
from keyhold.application.pagination import (
    decode_page_token,
    encode_page_token,
    id_cursor,
    page_of,
    page_size,
)
from keyhold.domain.audit.actions import Action
from keyhold.domain.clock import Clock
from keyhold.domain.errors import FailedPrecondition
from keyhold.domain.identity import DOMAIN
from keyhold.domain.identity.account_keys import (
    KEY_ID,
    MAX_KEYS_PER_ACCOUNT,
    AccountKey,
    PublicKeyReader,
    key_name_parts,
    key_not_found,
)
from keyhold.domain.identity.service_accounts import account_id_from_name, account_not_found
from keyhold.domain.unit_of_work import UnitOfWork, UnitOfWorkFactory


class AccountKeys:
    def __init__(
        self,
        unit_of_work: UnitOfWorkFactory,
        reader: PublicKeyReader,
        recorder: AuditRecorder,
        clock: Clock,
    ) -> None:
        self._unit_of_work = unit_of_work
        self._reader = reader
        self._recorder = recorder
        self._clock = clock

    async def add(self, parent: str, jwk_text: str) -> AccountKey:
        account_id = account_id_from_name(parent, "parent")
        key = self._reader.read(jwk_text)
        added = AccountKey(account_id, key, self._clock.now())
        details = {"algorithm": key.algorithm}
        async with (
            self._recorder.attempt(Action.SERVICE_ACCOUNT_KEY_ADD, added.name, details),
            self._unit_of_work() as uow,
        ):
            await _check_account(uow, account_id)
            if await uow.account_keys.count(account_id) >= MAX_KEYS_PER_ACCOUNT:
                raise FailedPrecondition(
                    "TOO_MANY_KEYS",
                    f"an account holds at most {MAX_KEYS_PER_ACCOUNT} keys; delete one first",
                    domain=DOMAIN,
                )
            await uow.account_keys.add(added)
        return added

    async def page(self, parent: str, size: int, token: str) -> tuple[list[AccountKey], str]:
        account_id = account_id_from_name(parent, "parent")
        limit = page_size(size)
        query = ["keys", account_id]
        after = id_cursor(decode_page_token(token, query), KEY_ID)
        async with self._unit_of_work(atomic=False) as uow:
            await _check_account(uow, account_id)
            found = await uow.account_keys.page(account_id, after, limit + 1)
        return page_of(found, limit, lambda last: encode_page_token(last.key.key_id, query))

    async def delete(self, name: str) -> None:
        account_id, key_id = key_name_parts(name)
        canonical = f"service-accounts/{account_id}/keys/{key_id}"
        async with (
            self._recorder.attempt(Action.SERVICE_ACCOUNT_KEY_DELETE, canonical),
            self._unit_of_work() as uow,
        ):
            if not await uow.account_keys.delete(account_id, key_id):
                raise key_not_found(canonical)


async def _check_account(uow: UnitOfWork, account_id: str) -> None:
    if await uow.service_accounts.get(account_id) is None:
        raise account_not_found(f"service-accounts/{account_id}")
