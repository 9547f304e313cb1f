"""Every audit record has a bounded size, whatever a caller sent.

Text longer than its ceiling keeps a prefix and ends with a marker naming the full
length and the SHA-256 of the full value, so an investigator holding the original can
still prove it was that value. Details beyond `MAX_DETAILS` entries are dropped, and
their number is recorded under `DROPPED_DETAILS_KEY`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

MAX_DETAILS = 32
MAX_DETAIL_KEY_LENGTH = 128
MAX_DETAIL_VALUE_LENGTH = 1024
MAX_RESOURCE_NAME_LENGTH = 512
MAX_CONTEXT_LENGTH = 256  # peer, user agent, request and trace ids
DROPPED_DETAILS_KEY = "details_dropped"


def _marker(value: str) -> str:
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return f"…[truncated: {len(value)} chars, sha256={digest}]"


def bounded_text(value: str, limit: int) -> str:
    """`value` if it fits in `limit` characters, else a prefix and the truncation
    marker, together at most `limit` characters (never less than the marker)."""
    if len(value) <= limit:
        return value
    marker = _marker(value)
    return value[: max(limit - len(marker), 0)] + marker


def bounded_details(details: Mapping[str, str]) -> dict[str, str]:
    """At most `MAX_DETAILS` entries (in key order, so which survive is deterministic),
    every key and value within its ceiling."""
    if len(details) <= MAX_DETAILS and all(
        len(key) <= MAX_DETAIL_KEY_LENGTH and len(value) <= MAX_DETAIL_VALUE_LENGTH
        for key, value in details.items()
    ):
        return dict(details)
    items = sorted(details.items())
    kept = items if len(items) <= MAX_DETAILS else items[: MAX_DETAILS - 1]
    bounded = {
        bounded_text(key, MAX_DETAIL_KEY_LENGTH): bounded_text(value, MAX_DETAIL_VALUE_LENGTH)
        for key, value in kept
    }
    dropped = len(details) - len(kept)
    if dropped:
        bounded[DROPPED_DETAILS_KEY] = str(dropped)
    return bounded
