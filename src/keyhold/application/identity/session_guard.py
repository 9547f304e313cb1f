"""Refusing access tokens whose session has ended, without a query per call.

The answer for a session is cached for a few seconds; a revocation made by this
process takes effect at once, and a revoked session stays refused.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable

from keyhold.domain.errors import Unauthenticated
from keyhold.domain.identity import DOMAIN
from keyhold.domain.identity.sessions import SessionStateSource
from keyhold.domain.principal import Principal

_FOREVER = float("inf")


class SessionGuard:
    def __init__(
        self, source: SessionStateSource, ttl_seconds: float = 5.0, max_entries: int = 100_000
    ) -> None:
        self._source = source
        self._ttl = ttl_seconds
        self._max_entries = max_entries
        self._cache: OrderedDict[str, tuple[bool, float]] = OrderedDict()

    async def check(self, principal: Principal) -> None:
        session_id = principal.session_id
        if session_id is None:
            return
        now = time.monotonic()
        cached = self._cache.get(session_id)
        if cached is not None and cached[1] > now:
            live = cached[0]
        else:
            user_id = principal.subject.removeprefix("users/")
            live = await self._source.is_live(session_id, user_id)
            self._remember(session_id, live, now + self._ttl if live else _FOREVER)
        if not live:
            raise Unauthenticated(
                "SESSION_REVOKED", "the session of this token has ended", domain=DOMAIN
            )

    def revoked(self, session_ids: Iterable[str]) -> None:
        for session_id in session_ids:
            self._remember(session_id, False, _FOREVER)

    def _remember(self, session_id: str, live: bool, until: float) -> None:
        self._cache[session_id] = (live, until)
        self._cache.move_to_end(session_id)
        if len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)
