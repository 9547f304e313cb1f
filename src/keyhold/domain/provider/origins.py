"""Where a stored credential may go: the origin (RFC 6454: scheme, host, port) of the
endpoint it was issued for, and nowhere else."""

from __future__ import annotations

from urllib.parse import urlsplit

_DEFAULT_PORTS = {"https": 443, "http": 80}


def origin_of(url: str) -> str:
    """`scheme://host:port`, lower-cased, the port always spelled out; "" for an empty or
    unparsable URL (which matches no origin)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return ""
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if not scheme or not host:
        return ""
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port or _DEFAULT_PORTS.get(scheme, 0)}"


def same_origin(origin: str, url: str) -> bool:
    return bool(origin) and origin == origin_of(url)
