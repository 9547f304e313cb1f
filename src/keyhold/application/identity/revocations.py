"""Ending sessions and service accounts everywhere at once.

Each process keeps a short-lived cache of which sessions and accounts are live (so an
access token costs no query per call); a revocation updates this process's cache
immediately and is published to every other replica (PostgreSQL NOTIFY), whose
listener applies it the same way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable

from keyhold.domain.bounded import BoundedMap
from keyhold.domain.errors import Unauthenticated
from keyhold.domain.identity import DOMAIN
from keyhold.domain.principal import Principal, PrincipalType
from keyhold.domain.tokens import ReplicaNotices

SESSION = "session"
SERVICE_ACCOUNT = "account"
SIGNING_KEY = "keys"
_FOREVER = float("inf")
_ANYONE = "*"  # the subject of a revocation's entry: it ends the key for every subject

LivenessSource = Callable[[Principal], Awaitable[bool]]

# Entries per cache (sessions, service accounts). Forgetting one costs a lookup: a
# revocation is in the database too, so a forgotten one is found again.
MAX_LIVENESS_ENTRIES = 100_000
# Lookups shared by the calls that wait for them, per cache. Past it a call looks up on
# its own: the calls in flight bound the memory then, not the keys they name.
MAX_SHARED_LOOKUPS = 10_000


class LivenessCache:
    """Whether a principal's session or account is live, cached for `ttl_seconds`;
    a revoked one stays refused.

    When a live entry expires, the calls keep being answered from it for up to another
    `ttl_seconds` while one lookup refreshes it behind them: a database slowed by other
    work (a login storm) then does not stall every call on a busy token. Revocations
    do not wait for that refresh: they are pushed into the cache as they happen. Past
    the second period, or for an entry never seen, the calls that find it share one
    lookup and wait for it (a busy token would otherwise send every call in flight to
    the database at once).

    An entry is the answer for one principal's subject and `key` together: a token whose
    `sid` names another user's session is looked up for its own subject (and found not
    live) instead of being answered from, or answering for, that user's entry. A
    revocation ends `key` whoever presents it."""

    def __init__(
        self,
        source: LivenessSource,
        ttl_seconds: float,
        max_entries: int,
        monotonic: Callable[[], float] = time.monotonic,
        max_shared_lookups: int = MAX_SHARED_LOOKUPS,
    ) -> None:
        self._source = source
        self._monotonic = monotonic
        self._ttl = ttl_seconds
        self._cache: BoundedMap[tuple[str, str], tuple[bool, float]] = BoundedMap(max_entries)
        self._lookups: dict[tuple[str, str], asyncio.Future[bool]] = {}
        self._max_shared_lookups = max_shared_lookups

    @property
    def shared_lookups(self) -> int:
        """Lookups under way that later calls for the same entry will wait for."""
        return len(self._lookups)

    async def is_live(self, key: str, principal: Principal) -> bool:
        live = self.answer_without_waiting(key, principal)
        if live is not None:
            return live
        # Shielded: one caller cancelled leaves the others their answer.
        return await asyncio.shield(self._shared_lookup(key, principal))

    def answer_without_waiting(self, key: str, principal: Principal) -> bool | None:
        """The answer the cache can give without waiting, or None when a lookup must be
        awaited (`is_live`)."""
        if (_ANYONE, key) in self._cache:
            return False
        cached = self._cache.get((principal.subject, key))
        if cached is None:
            return None
        live, fresh_until = cached
        now = self._monotonic()
        if fresh_until > now:
            return live
        if live and fresh_until + self._ttl > now:
            self._shared_lookup(key, principal)  # refreshed behind this call
            return True
        return None

    def _shared_lookup(self, key: str, principal: Principal) -> asyncio.Future[bool]:
        entry = (principal.subject, key)
        lookup = self._lookups.get(entry)
        if lookup is None:
            lookup = asyncio.ensure_future(self._ask_source(entry, principal))
            lookup.add_done_callback(lambda done: self._forget_lookup(entry, done))
            if len(self._lookups) < self._max_shared_lookups:  # else this caller's own
                self._lookups[entry] = lookup
        return lookup

    async def _ask_source(self, entry: tuple[str, str], principal: Principal) -> bool:
        live = await self._source(principal)
        if (_ANYONE, entry[1]) in self._cache:  # revoked while we asked: stays revoked
            return False
        self._remember(entry, live, self._monotonic() + self._ttl if live else _FOREVER)
        return live

    def _forget_lookup(self, key: tuple[str, str], done: asyncio.Future[bool]) -> None:
        if self._lookups.get(key) is done:
            del self._lookups[key]
        if not done.cancelled():
            done.exception()  # retrieved: every waiter got it already

    def revoked(self, keys: Iterable[str]) -> None:
        # No entry for `key` is remembered after this one, so eviction (oldest first)
        # drops the entries it overrides before it.
        for key in keys:
            self._remember((_ANYONE, key), False, _FOREVER)

    def _remember(self, key: tuple[str, str], live: bool, until: float) -> None:
        self._cache.put(key, (live, until))


class NoReplicas:
    """The notices of a process with no other replicas to tell (SQLite)."""

    async def publish(self, kind: str, ids: list[str]) -> None:
        return None


NO_REPLICAS = NoReplicas()


class Revocations:
    def __init__(
        self,
        session_is_live: LivenessSource,
        account_is_live: LivenessSource,
        notices: ReplicaNotices = NO_REPLICAS,
        ttl_seconds: float = 5.0,
        max_entries: int = MAX_LIVENESS_ENTRIES,
    ) -> None:
        self._sessions = LivenessCache(session_is_live, ttl_seconds, max_entries)
        self._accounts = LivenessCache(account_is_live, ttl_seconds, max_entries)
        self.notices = notices

    def known_live(self, principal: Principal) -> bool:
        """True when the cache already knows the principal's session or account is live:
        `check` would then return at once. False means `check` must be awaited."""
        if principal.session_id is not None:
            return self._sessions.answer_without_waiting(principal.session_id, principal) is True
        if principal.type is PrincipalType.SERVICE:
            return self._accounts.answer_without_waiting(principal.subject, principal) is True
        return True

    async def check(self, principal: Principal) -> None:
        """Refuse a token whose session or service account has ended."""
        if principal.session_id is not None:
            if not await self._sessions.is_live(principal.session_id, principal):
                raise Unauthenticated(
                    "SESSION_REVOKED", "the session of this token has ended", domain=DOMAIN
                )
        elif principal.type is PrincipalType.SERVICE and not await self._accounts.is_live(
            principal.subject, principal
        ):
            raise Unauthenticated(
                "SERVICE_ACCOUNT_REVOKED",
                "the service account of this token was deleted",
                domain=DOMAIN,
            )

    async def sessions_ended(self, session_ids: list[str]) -> None:
        if session_ids:
            self.apply(SESSION, session_ids)
            await self.notices.publish(SESSION, session_ids)

    async def account_ended(self, subject: str) -> None:
        self.apply(SERVICE_ACCOUNT, [subject])
        await self.notices.publish(SERVICE_ACCOUNT, [subject])

    def apply(self, kind: str, ids: list[str]) -> None:
        """A revocation made here or announced by another replica."""
        (self._sessions if kind == SESSION else self._accounts).revoked(ids)
