"""OAuthClient over httpx: timeouts, bounded retries with backoff for network errors and
5xx answers, and a circuit breaker per provider. Every request passes the egress policy
(the URL before it is sent, each address at connect time), follows no redirect, and reads
a bounded answer by a deadline. None of it blocks the event loop."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import httpx
import structlog

from keyhold.adapters.oauth.bounded_post import bounded_post
from keyhold.adapters.oauth.circuit_breaker import CircuitBreaker, CircuitOpen, CircuitState
from keyhold.adapters.oauth.egress_transport import EgressTransport, outbound_client
from keyhold.adapters.oauth.token_response import oauth_error, token_set
from keyhold.domain.bounded import BoundedMap
from keyhold.domain.provider.egress import EgressPolicy, EgressRefused
from keyhold.domain.provider.oauth import ProviderUnreachable, TokenSet
from keyhold.domain.provider.providers import Provider

log = structlog.get_logger(__name__)

# Breakers kept, one per provider slug. Past it the least recently made is forgotten:
# its provider starts again closed, as after a restart.
MAX_BREAKERS = 1_000


class HttpOAuthClient:
    def __init__(
        self,
        *,
        timeout_seconds: float = 10.0,
        retries: int = 2,
        backoff_seconds: float = 0.2,
        breaker_threshold: int = 5,
        breaker_cooldown_seconds: float = 30.0,
        instrument: Callable[[httpx.AsyncClient], None] | None = None,
        egress: EgressPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_response_bytes: int = 1024 * 1024,
    ) -> None:
        """`egress`: the policy every URL passes (default: the strict one); `transport`
        replaces the vetting transport built from it (tests only: it must apply the same
        policy at connect time)."""
        self._egress = egress or EgressPolicy()
        self._http = outbound_client(
            transport or EgressTransport(self._egress), timeout_seconds, "application/json"
        )
        self._timeout = timeout_seconds
        self._max_response_bytes = max_response_bytes
        if instrument is not None:
            instrument(self._http)  # tracing: a span per provider HTTP call
        self._retries = retries
        self._backoff = backoff_seconds
        self._threshold = breaker_threshold
        self._cooldown = breaker_cooldown_seconds
        self._breakers: BoundedMap[str, CircuitBreaker] = BoundedMap(MAX_BREAKERS)

    def breaker(self, slug: str) -> CircuitBreaker:
        breaker = self._breakers.get(slug)
        if breaker is None:
            breaker = CircuitBreaker(self._threshold, self._cooldown)
            self._breakers.put(slug, breaker)
        return breaker

    def breaker_states(self) -> dict[str, CircuitState]:
        # `items` copies first: a metrics scrape reads this from another thread.
        return {slug: breaker.state for slug, breaker in self._breakers.items()}

    async def close(self) -> None:
        await self._http.aclose()

    async def _post(
        self,
        provider: Provider,
        url: str,
        form: dict[str, str],
        secret: str,
        *,
        expect_json: bool = True,
    ) -> Any:
        try:
            self._egress.check_url(url)  # again at each call: the row may predate the policy
            httpx.URL(url)
        except (EgressRefused, httpx.InvalidURL) as exc:
            log.warning("provider_egress_refused", provider=provider.slug, why=str(exc))
            if isinstance(exc, EgressRefused):
                raise
            raise EgressRefused("the URL cannot be parsed") from exc
        breaker = self.breaker(provider.slug)
        try:
            async with breaker.attempt():
                return await self._post_through(breaker, provider, url, form, secret, expect_json)
        except CircuitOpen:
            raise ProviderUnreachable(
                f"{provider.slug}: circuit open after repeated failures"
            ) from None

    async def _post_through(
        self,
        breaker: CircuitBreaker,
        provider: Provider,
        url: str,
        form: dict[str, str],
        secret: str,
        expect_json: bool,
    ) -> Any:
        data = {**form, "client_id": provider.client_id}
        if secret:
            data["client_secret"] = secret  # client_secret_post (RFC 6749 §2.3.1)
        last_error = "no attempt made"
        for attempt in range(self._retries + 1):
            if attempt:
                await asyncio.sleep(self._backoff * (2 ** (attempt - 1)) * (1 + random.random()))  # noqa: S311
            try:
                response = await bounded_post(
                    self._http,
                    url,
                    data,
                    max_bytes=self._max_response_bytes,
                    deadline_seconds=self._timeout,
                )
            except EgressRefused as exc:  # at connect time: the name resolved to a refused address
                log.warning("provider_egress_refused", provider=provider.slug, why=str(exc))
                raise
            except httpx.HTTPError as exc:
                last_error = type(exc).__name__
                continue
            if response.status_code >= 500:
                last_error = f"HTTP {response.status_code}"
                continue
            if not expect_json and response.status_code == 200:
                breaker.succeeded()
                return {}
            try:
                body = response.json()
            except ValueError:
                last_error = "a body that is not JSON"
                continue
            if not isinstance(body, dict):
                last_error = "a body that is not a JSON object"
                continue
            breaker.succeeded()
            if response.status_code >= 400 or "error" in body:
                raise oauth_error(body)
            return body
        breaker.failed()
        log.warning("provider_unreachable", provider=provider.slug, error=last_error)
        raise ProviderUnreachable(f"{provider.slug}: {last_error}")

    async def exchange_code(
        self, provider: Provider, client_secret: str, code: str, verifier: str, redirect_uri: str
    ) -> TokenSet:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        return token_set(await self._post(provider, provider.token_endpoint, form, client_secret))

    async def refresh(self, provider: Provider, client_secret: str, refresh_token: str) -> TokenSet:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        return token_set(await self._post(provider, provider.token_endpoint, form, client_secret))

    async def revoke(self, provider: Provider, client_secret: str, token: str, hint: str) -> None:
        if not provider.revocation_endpoint:
            return
        form = {"token": token, "token_type_hint": hint}
        await self._post(
            provider, provider.revocation_endpoint, form, client_secret, expect_json=False
        )
