"""The registry of audited actions: every action any handler records, with the type of
resource it acts on and the RPC that performs it. Handlers can only name actions from
this enum; a test checks that each one is recorded somewhere."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Action(StrEnum):
    ACCESS_DENIED = "access.denied"
    AUDIT_EVENTS_LIST = "audit.events.list"
    AUDIT_EVENT_GET = "audit.event.get"
    AUDIT_EVENTS_STREAM = "audit.events.stream"
    AUDIT_CHAIN_VERIFY = "audit.chain.verify"
    AUDIT_CHECKPOINT_GET = "audit.checkpoint.get"


@dataclass(frozen=True, slots=True)
class ActionInfo:
    resource_type: str
    rpc: str | None  # "/package.Service/Method", or None for actions not tied to one RPC
    description: str


_AUDIT = "/keyhold.audit.v1.AuditService/"

REGISTRY: dict[Action, ActionInfo] = {
    Action.ACCESS_DENIED: ActionInfo(
        "rpc", None, "a call refused by authentication or authorization before its handler"
    ),
    Action.AUDIT_EVENTS_LIST: ActionInfo("audit-event", _AUDIT + "ListAuditEvents", "audit read"),
    Action.AUDIT_EVENT_GET: ActionInfo("audit-event", _AUDIT + "GetAuditEvent", "audit read"),
    Action.AUDIT_EVENTS_STREAM: ActionInfo(
        "audit-event", _AUDIT + "StreamAuditEvents", "audit stream opened and closed"
    ),
    Action.AUDIT_CHAIN_VERIFY: ActionInfo(
        "audit-event", _AUDIT + "VerifyAuditChain", "hash chain verified"
    ),
    Action.AUDIT_CHECKPOINT_GET: ActionInfo(
        "audit-checkpoint", _AUDIT + "GetAuditCheckpoint", "signed checkpoint issued"
    ),
}

_BY_RPC = {info.rpc: action for action, info in REGISTRY.items() if info.rpc is not None}


def action_for_rpc(full_method: str) -> Action | None:
    return _BY_RPC.get(full_method)
