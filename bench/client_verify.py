"""Local access-token verification in the client library, with the key cached.

    python -m bench client-verify [--tokens 20000]

Distinct tokens (no verified-token cache hits), verified one after another on one core
by the same verifier `keyhold.client.TokenVerifier` uses; CPU time from the process.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

from keyhold.access_token_verification import AccessTokenVerifier
from keyhold.adapters.crypto.access_tokens import AccessTokens
from keyhold.adapters.crypto.es256 import Es256KeyGenerator
from keyhold.adapters.crypto.key_ring import KeyRing
from keyhold.domain.clock import SystemClock


@dataclass(frozen=True)
class _Published:
    algorithm: str
    public_key: Any


class _CachedKeys:
    def __init__(self, keys: dict[str, _Published]) -> None:
        self._keys = keys

    def get(self, key_id: str) -> _Published | None:
        return self._keys.get(key_id)

    async def reload_if_stale(self) -> bool:
        return False


async def _nothing() -> list[Any]:
    return []


async def run(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench client-verify")
    parser.add_argument("--tokens", type=int, default=20_000)
    args = parser.parse_args(argv)
    clock = SystemClock()
    key = Es256KeyGenerator().generate(clock.now())
    ring = KeyRing(_nothing)
    ring.replace([key])
    issuer = AccessTokens(
        ring,
        issuer="keyhold",
        audience="keyhold",
        lifetime_seconds=900,
        leeway_seconds=30,
        clock=clock,
    )
    tokens = [
        issuer.issue(subject="service-accounts/bench", scopes=["audit.read"]).token
        for _ in range(args.tokens)
    ]
    signer = ring.signer
    verifier = AccessTokenVerifier(
        _CachedKeys({signer.key_id: _Published(signer.algorithm, signer.public_key)}),
        issuer="keyhold",
        audience="keyhold",
        leeway_seconds=30,
        clock=clock,
        cache_size=1,
    )
    started = time.process_time()
    for token in tokens:
        await verifier.verify(token)
    cpu = time.process_time() - started
    rate = args.tokens / cpu
    print(
        f"{args.tokens} distinct ES256 tokens: {rate:,.0f} verifications per CPU-second "
        f"({cpu / args.tokens * 1e6:.0f} us each)"
    )
    started = time.process_time()
    for _ in range(args.tokens):
        await verifier.verify(tokens[0])
    cached = args.tokens / (time.process_time() - started)
    print(f"the same token again (verified-claims cache): {cached:,.0f} per CPU-second")
    return {"distinct_per_cpu_second": round(rate), "cached_per_cpu_second": round(cached)}
