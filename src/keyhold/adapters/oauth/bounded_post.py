"""One request to a provider or an issuer, bounded: no redirect is followed, no more
than a set number of bytes is read, and the whole exchange (connect, send, every read)
ends by a deadline. Without the deadline a server dripping a byte at a time would hold
a call for as long as it liked, since httpx's timeouts bound each read, not their sum."""

from __future__ import annotations

import asyncio

import httpx

_IDENTITY = "identity"
_FRAMING = {"content-encoding", "content-length", "transfer-encoding"}


class ResponseTooLarge(httpx.HTTPError):
    """The answer is longer than the limit; it was cut off unread."""


class RedirectNotFollowed(httpx.HTTPError):
    """The server answered with a redirect, which these calls never follow."""


class UnaskedEncoding(httpx.HTTPError):
    """The body is compressed although only `identity` was accepted: its decoded size
    could not be bounded by what was read."""


async def bounded_post(
    http: httpx.AsyncClient,
    url: str,
    form: dict[str, str],
    *,
    max_bytes: int,
    deadline_seconds: float,
) -> httpx.Response:
    """The answer, its body read in full (at most `max_bytes`). Raises an httpx.HTTPError:
    TimeoutException past the deadline, or one of the errors above."""
    return await bounded_request(
        http, "POST", url, form, max_bytes=max_bytes, deadline_seconds=deadline_seconds
    )


async def bounded_request(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    form: dict[str, str] | None = None,
    *,
    max_bytes: int,
    deadline_seconds: float,
) -> httpx.Response:
    """`bounded_post` for any method; `form` is the body, if any."""
    try:
        async with (
            asyncio.timeout(deadline_seconds),
            http.stream(method, url, data=form, headers={"accept-encoding": _IDENTITY}) as response,
        ):
            if 300 <= response.status_code < 400:
                raise RedirectNotFollowed(f"HTTP {response.status_code} redirect, not followed")
            if response.headers.get("content-encoding", _IDENTITY).lower() != _IDENTITY:
                raise UnaskedEncoding("a compressed body that was not asked for")
            body = await _read_at_most(response, max_bytes)
    except TimeoutError:
        raise httpx.TimeoutException(f"no complete answer within {deadline_seconds} s") from None
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _FRAMING]
    return httpx.Response(
        response.status_code, headers=headers, content=body, request=response.request
    )


async def _read_at_most(response: httpx.Response, limit: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ResponseTooLarge(f"a body of {declared} bytes, over the limit of {limit}")
    body = bytearray()
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) > limit:
            raise ResponseTooLarge(f"a body over the limit of {limit} bytes")
    return bytes(body)
