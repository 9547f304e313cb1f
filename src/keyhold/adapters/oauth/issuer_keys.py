"""Trusted issuers' signing keys: an inline JWK Set as given, a published one fetched
through the egress policy and kept for its `Cache-Control: max-age` (within bounds).
A token naming a key the kept set lacks makes it be fetched again, at most once per
`min_refetch_seconds`, so a stream of made-up key ids cannot turn into a stream of
requests. When a fetch fails, the keys fetched before go on being used until a fetch
succeeds: an issuer's brief outage does not lock its workloads out."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import structlog

from keyhold.adapters.oauth.bounded_post import bounded_request
from keyhold.adapters.oauth.egress_transport import outbound_client
from keyhold.domain.bounded import BoundedMap
from keyhold.domain.errors import DomainError, Unavailable
from keyhold.domain.identity import DOMAIN
from keyhold.domain.identity.account_keys import PublicKey
from keyhold.domain.identity.trusted_issuers import JwkSets, TrustedIssuer
from keyhold.domain.provider.egress import EgressPolicy, EgressRefused

log = structlog.get_logger(__name__)

_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*(\d{1,9})\s*(?:,|$)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class _Kept:
    keys: dict[str, PublicKey]
    fresh_until: float
    fetched_at: float


def unavailable(message: str) -> Unavailable:
    return Unavailable("ISSUER_KEYS_UNAVAILABLE", message, domain=DOMAIN)


class PublishedIssuerKeys:
    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        egress: EgressPolicy,
        jwk_sets: JwkSets,
        *,
        max_response_bytes: int = 256 * 1024,
        deadline_seconds: float = 10.0,
        default_max_age_seconds: float = 300.0,
        max_age_bounds: tuple[float, float] = (60.0, 86_400.0),
        min_refetch_seconds: float = 60.0,
        capacity: int = 1024,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """`transport` reaches the issuers and applies `egress` at connect time (an
        EgressTransport); `capacity` bounds the key sets kept, inline and published
        alike."""
        self._http = outbound_client(
            transport, deadline_seconds, "application/jwk-set+json, application/json"
        )
        self._egress = egress
        self._jwk_sets = jwk_sets
        self._max_bytes = max_response_bytes
        self._deadline = deadline_seconds
        self._default_max_age = default_max_age_seconds
        self._max_age_bounds = max_age_bounds
        self._min_refetch = min_refetch_seconds
        self._monotonic = monotonic
        self._kept: BoundedMap[str, _Kept] = BoundedMap(capacity)
        self._fetching: BoundedMap[str, asyncio.Lock] = BoundedMap(capacity)

    async def close(self) -> None:
        await self._http.aclose()

    async def key(self, issuer: TrustedIssuer, key_id: str) -> PublicKey | None:
        if issuer.jwks_json:
            return self._inline(issuer.jwks_json).get(key_id)
        url, now = issuer.jwks_url, self._monotonic()
        kept = self._kept.get(url)
        if kept is not None and key_id in kept.keys and now < kept.fresh_until:
            return kept.keys[key_id]
        if kept is not None and now < kept.fetched_at + self._min_refetch:
            return kept.keys.get(key_id)
        kept = await self._refetched(url, kept)
        return kept.keys.get(key_id)

    def _inline(self, jwks_json: str) -> dict[str, PublicKey]:
        cache_key = "inline:" + hashlib.sha256(jwks_json.encode()).hexdigest()
        kept = self._kept.get(cache_key)
        if kept is None:
            kept = _Kept(self._jwk_sets.read(jwks_json), float("inf"), 0.0)
            self._kept.put(cache_key, kept)
        return kept.keys

    async def _refetched(self, url: str, stale: _Kept | None) -> _Kept:
        lock = self._fetching.get(url)
        if lock is None:
            lock = asyncio.Lock()
            self._fetching.put(url, lock)
        async with lock:
            kept = self._kept.get(url)
            if kept is not None and kept is not stale:  # fetched while this call waited
                return kept
            try:
                kept = await self._fetch(url)
            except Unavailable:
                if stale is None:
                    raise
                log.warning("issuer_keys_stale", jwks_url=url)
                kept = _Kept(stale.keys, stale.fresh_until, self._monotonic())
            self._kept.put(url, kept)
            return kept

    async def _fetch(self, url: str) -> _Kept:
        try:
            self._egress.check_url(url)  # again: the row may predate the policy
            response = await bounded_request(
                self._http,
                "GET",
                url,
                max_bytes=self._max_bytes,
                deadline_seconds=self._deadline,
            )
        except (EgressRefused, httpx.HTTPError) as exc:
            log.warning("issuer_keys_unreachable", jwks_url=url, error=type(exc).__name__)
            raise unavailable("the issuer's keys cannot be fetched; try again") from None
        if response.status_code != 200:
            log.warning("issuer_keys_unreachable", jwks_url=url, status=response.status_code)
            raise unavailable("the issuer's keys cannot be fetched; try again")
        try:
            keys = self._jwk_sets.read(response.text)
        except DomainError:
            log.warning("issuer_keys_unusable", jwks_url=url)
            raise unavailable("the issuer publishes no usable signing key") from None
        now = self._monotonic()
        return _Kept(keys, now + self._max_age(response), now)

    def _max_age(self, response: httpx.Response) -> float:
        control = response.headers.get("cache-control", "")
        if "no-store" in control.lower() or "no-cache" in control.lower():
            return self._max_age_bounds[0]
        found = _MAX_AGE.search(control)
        seconds = float(found.group(1)) if found else self._default_max_age
        low, high = self._max_age_bounds
        return min(max(seconds, low), high)
