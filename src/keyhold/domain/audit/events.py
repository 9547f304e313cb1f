"""Audit records (what to append) and audit events (what was appended, chained)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class ActorType(StrEnum):
    USER = "user"
    SERVICE = "service"
    ANONYMOUS = "anonymous"
    SYSTEM = "system"


class Outcome(StrEnum):
    ATTEMPTED = "attempted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DENIED = "denied"


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audit record as PCI DSS 10.2.2 asks: who, what, when, outcome, from where,
    on what. Never holds a secret."""

    event_id: str
    attempt_id: str
    time: datetime
    actor_type: ActorType
    actor_id: str
    action: str
    outcome: Outcome
    resource_type: str
    resource_name: str
    peer: str
    user_agent: str
    request_id: str
    trace_id: str
    status_code: int
    reason: str
    details: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """An appended record: its place in the chain and the exact bytes that were hashed."""

    sequence: int
    record: AuditRecord
    canonical: bytes
    prev_hash: bytes
    hash: bytes


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Exact-match filters for listing; empty fields match everything."""

    actor_id: str = ""
    action: str = ""
    resource_name: str = ""
    outcome: Outcome | None = None
    start_time: datetime | None = None  # inclusive
    end_time: datetime | None = None  # exclusive
