"""AIP-158 pagination: page sizes, and opaque page tokens bound to their query."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

from keyhold.domain.errors import FieldViolation, InvalidArgument

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument(
            "PAGE_SIZE_INVALID",
            "page_size must not be negative",
            [FieldViolation("page_size", "must be 0 (default) or positive")],
        )
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _fingerprint(query: object) -> str:
    encoded = json.dumps(query, sort_keys=True, default=str).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


def encode_page_token(cursor: object, query: object) -> str:
    payload = json.dumps({"c": cursor, "q": _fingerprint(query)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_page_token(token: str, query: object) -> object | None:
    """The cursor in `token` (None for an empty token); INVALID_ARGUMENT when the token
    is malformed or was issued for a different query."""
    if not token:
        return None
    invalid = InvalidArgument(
        "PAGE_TOKEN_INVALID",
        "page_token is not one this query returned",
        [FieldViolation("page_token", "use next_page_token from the same query")],
    )
    if len(token) > 512:
        raise invalid
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise invalid from exc
    if not isinstance(decoded, dict) or decoded.get("q") != _fingerprint(query):
        raise invalid
    cursor = decoded.get("c")
    if not _printable_ascii(cursor):  # ours are; NUL or a lone surrogate breaks a query
        raise invalid
    return cursor


def _printable_ascii(value: object) -> bool:
    """Every string in a decoded JSON value (keys too) is printable ASCII."""
    if isinstance(value, str):
        return value.isascii() and value.isprintable()
    if isinstance(value, list):
        return all(_printable_ascii(item) for item in value)
    if isinstance(value, dict):
        return all(_printable_ascii(key) and _printable_ascii(item) for key, item in value.items())
    return True


def time_id_cursor(cursor: object) -> tuple[str, str] | None:
    """A decoded `[created_at ISO, id]` keyset cursor (None for the first page), its time
    in UTC. Tokens are opaque but not secret: a forged one may carry any time."""
    if cursor is None:
        return None
    if isinstance(cursor, list) and len(cursor) == 2:
        created, identifier = cursor
        if isinstance(created, str) and isinstance(identifier, str) and len(identifier) <= 64:
            try:
                moment = datetime.fromisoformat(created)
                if moment.tzinfo is not None:  # the columns hold aware times only
                    return moment.astimezone(UTC).isoformat(), identifier
            except (ValueError, OverflowError):  # not a time, or beyond year 1..9999 in UTC
                pass
    raise _malformed()


def id_cursor(cursor: object, identifier: re.Pattern[str]) -> str:
    """A decoded cursor that is one identifier matching `identifier`; "" for the first
    page."""
    if cursor is None:
        return ""
    if isinstance(cursor, str) and identifier.match(cursor):
        return cursor
    raise _malformed()


def _malformed() -> InvalidArgument:
    return InvalidArgument(
        "PAGE_TOKEN_INVALID",
        "page_token is malformed",
        [FieldViolation("page_token", "use next_page_token from the same query")],
    )


def time_id_token(created: datetime, identifier: str, query: object) -> str:
    return encode_page_token([created.isoformat(), identifier], query)


def page_of(found: list[T], limit: int, token_for: Callable[[T], str]) -> tuple[list[T], str]:
    """Cut a `limit + 1` fetch to a page: the items, and the token for the next page (from
    the page's last item), empty when nothing follows."""
    if len(found) <= limit:
        return found, ""
    page = found[:limit]
    return page, token_for(page[-1])
