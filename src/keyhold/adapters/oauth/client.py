"""OAuthClient over httpx: timeouts, bounded retries with backoff for network errors and
5xx answers, and a circuit breaker per provider. None of it blocks the event loop."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import httpx
import structlog

from keyhold.adapters.oauth.circuit_breaker import CircuitBreaker, CircuitOpen, CircuitState
from keyhold.domain.provider.oauth import OAuthError, ProviderUnreachable, TokenSet
from keyhold.domain.provider.providers import Provider

log = structlog.get_logger(__name__)


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
    ) -> None:
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_seconds),
            follow_redirects=False,
            headers={"accept": "application/json"},
        )
        if instrument is not None:
            instrument(self._http)  # tracing: a span per provider HTTP call
        self._retries = retries
        self._backoff = backoff_seconds
        self._threshold = breaker_threshold
        self._cooldown = breaker_cooldown_seconds
        self._breakers: dict[str, CircuitBreaker] = {}

    def breaker(self, slug: str) -> CircuitBreaker:
        if slug not in self._breakers:
            self._breakers[slug] = CircuitBreaker(self._threshold, self._cooldown)
        return self._breakers[slug]

    def breaker_states(self) -> dict[str, CircuitState]:
        # A copy first: a metrics scrape reads this from another thread.
        return {slug: breaker.state for slug, breaker in list(self._breakers.items())}

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
                response = await self._http.post(url, data=data)
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
                raise OAuthError(
                    str(body.get("error", "invalid_response")),
                    str(body.get("error_description", "")),
                )
            return body
        breaker.failed()
        log.warning("provider_unreachable", provider=provider.slug, error=last_error)
        raise ProviderUnreachable(f"{provider.slug}: {last_error}")

    @staticmethod
    def _token_set(body: dict[str, Any]) -> TokenSet:
        access = body.get("access_token")
        if not isinstance(access, str) or not access:
            raise OAuthError("invalid_response", "no access_token in the answer")
        expires_in = body.get("expires_in")
        refresh = body.get("refresh_token")
        scope = body.get("scope")
        return TokenSet(
            access_token=access,
            refresh_token=refresh if isinstance(refresh, str) else "",
            expires_in=int(expires_in) if isinstance(expires_in, int | float) else None,
            scope=scope if isinstance(scope, str) else None,
            token_type=str(body.get("token_type", "Bearer")),
        )

    async def exchange_code(
        self, provider: Provider, client_secret: str, code: str, verifier: str, redirect_uri: str
    ) -> TokenSet:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        return self._token_set(
            await self._post(provider, provider.token_endpoint, form, client_secret)
        )

    async def refresh(self, provider: Provider, client_secret: str, refresh_token: str) -> TokenSet:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        return self._token_set(
            await self._post(provider, provider.token_endpoint, form, client_secret)
        )

    async def revoke(self, provider: Provider, client_secret: str, token: str, hint: str) -> None:
        if not provider.revocation_endpoint:
            return
        form = {"token": token, "token_type_hint": hint}
        await self._post(
            provider, provider.revocation_endpoint, form, client_secret, expect_json=False
        )
