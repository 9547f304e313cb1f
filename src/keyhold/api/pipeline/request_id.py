"""Request ids: taken from `x-request-id` when well-formed, otherwise generated."""

from __future__ import annotations

import re
import uuid

_ACCEPTABLE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id_from(header: str | None) -> str:
    if header is not None and _ACCEPTABLE.match(header):
        return header
    return uuid.uuid4().hex
