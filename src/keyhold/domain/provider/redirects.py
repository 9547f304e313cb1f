"""Redirect URIs: each provider lists the ones connections may use, matched exactly
(RFC 9700 §2.1: no prefix, pattern or normalising match)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from keyhold.domain.provider.providers import invalid

MAX_REDIRECT_URIS = 20
MAX_REDIRECT_URI_LENGTH = 2048


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _acceptable(uri: str) -> bool:
    """An absolute https URI, or http on loopback for native apps (RFC 8252 §7.3), with
    no fragment, credentials, spaces or control characters."""
    if not 0 < len(uri) <= MAX_REDIRECT_URI_LENGTH or not uri.isascii():
        return False
    if any(ch.isspace() or ord(ch) < 0x21 or ord(ch) == 0x7F for ch in uri):
        return False
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        return False
    host = parts.hostname or ""
    secure = parts.scheme == "https"
    local = parts.scheme == "http" and _loopback(host)
    return (
        bool(host)
        and (secure or local)
        and not (parts.username or parts.password)
        and "#" not in uri
    )


def validate_redirect_uris(uris: list[str] | tuple[str, ...], field: str) -> tuple[str, ...]:
    if len(uris) > MAX_REDIRECT_URIS:
        raise invalid("REDIRECT_URIS_INVALID", field, f"at most {MAX_REDIRECT_URIS} URIs")
    for uri in uris:
        if not _acceptable(uri):
            raise invalid(
                "REDIRECT_URIS_INVALID",
                field,
                f"absolute https URIs (http only on loopback) of at most "
                f"{MAX_REDIRECT_URI_LENGTH} characters, without a fragment",
            )
    return tuple(dict.fromkeys(uris))


def require_allowed(redirect_uri: str, allowed: tuple[str, ...], field: str) -> str:
    """`redirect_uri` if it is, character for character, one of `allowed`."""
    if redirect_uri not in allowed:
        raise invalid(
            "REDIRECT_URI_NOT_ALLOWED",
            field,
            "must be exactly one of the provider's registered redirect URIs",
        )
    return redirect_uri
