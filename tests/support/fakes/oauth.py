"""An OAuth client that answers as a test scripts it and remembers what it was sent."""

from __future__ import annotations

from dataclasses import dataclass, field

from keyhold.domain.provider.oauth import TokenSet
from keyhold.domain.provider.providers import Provider


@dataclass(frozen=True, slots=True)
class Exchange:
    provider: str
    client_secret: str = field(repr=False)
    code: str = field(repr=False)
    verifier: str = field(repr=False)
    redirect_uri: str


@dataclass(frozen=True, slots=True)
class Refresh:
    provider: str
    client_secret: str = field(repr=False)
    refresh_token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Revocation:
    provider: str
    client_secret: str = field(repr=False)
    token: str = field(repr=False)
    hint: str


class FakeOAuthClient:
    """Each call takes the next scripted answer of its kind: a TokenSet to return, or an
    exception to raise (OAuthError, ProviderUnreachable, ...). A call with nothing
    scripted fails the test."""

    def __init__(self) -> None:
        self.exchange_answers: list[TokenSet | Exception] = []
        self.refresh_answers: list[TokenSet | Exception] = []
        self.revoke_errors: list[Exception] = []
        self.exchanges: list[Exchange] = []
        self.refreshes: list[Refresh] = []
        self.revocations: list[Revocation] = []

    @staticmethod
    def _answer(answers: list[TokenSet | Exception], call: str) -> TokenSet:
        assert answers, f"{call} was not expected"
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def exchange_code(
        self, provider: Provider, client_secret: str, code: str, verifier: str, redirect_uri: str
    ) -> TokenSet:
        self.exchanges.append(Exchange(provider.slug, client_secret, code, verifier, redirect_uri))
        return self._answer(self.exchange_answers, "exchange_code")

    async def refresh(self, provider: Provider, client_secret: str, refresh_token: str) -> TokenSet:
        self.refreshes.append(Refresh(provider.slug, client_secret, refresh_token))
        return self._answer(self.refresh_answers, "refresh")

    async def revoke(self, provider: Provider, client_secret: str, token: str, hint: str) -> None:
        self.revocations.append(Revocation(provider.slug, client_secret, token, hint))
        if self.revoke_errors:
            raise self.revoke_errors.pop(0)
