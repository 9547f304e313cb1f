"""Domain objects → keyhold.identity.v1 messages."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from keyhold.application.identity.api_resources import Grant
from keyhold.domain.identity.service_accounts import ServiceAccount
from keyhold.domain.identity.sessions import Session
from keyhold.domain.identity.users import User, UserState
from keyhold.identity.v1 import identity_service_pb2 as pb

USER_STATES = {UserState.ACTIVE: pb.USER_STATE_ACTIVE, UserState.DISABLED: pb.USER_STATE_DISABLED}
STATES_BY_NUMBER = {number: state for state, number in USER_STATES.items()}


def timestamp(value: datetime | int) -> Timestamp:
    stamp = Timestamp()
    if isinstance(value, int):
        stamp.seconds = value
    else:
        stamp.FromDatetime(value)
    return stamp


def user_message(user: User) -> pb.User:
    return pb.User(
        name=user.name,
        email=user.email,
        display_name=user.display_name,
        email_verified=user.email_verified,
        state=USER_STATES[user.state],
        roles=sorted(user.roles),
        create_time=timestamp(user.created_at),
        update_time=timestamp(user.updated_at),
    )


def session_message(session: Session) -> pb.Session:
    return pb.Session(
        name=session.name,
        user=f"users/{session.user_id}",
        user_agent=session.user_agent,
        create_time=timestamp(session.created_at),
        expire_time=timestamp(session.expires_at),
        idle_expire_time=timestamp(session.idle_expires_at),
        last_refresh_time=timestamp(session.last_refresh_at),
    )


def service_account_message(account: ServiceAccount) -> pb.ServiceAccount:
    return pb.ServiceAccount(
        name=account.name,
        client_id=account.client_id,
        display_name=account.display_name,
        scopes=sorted(account.scopes),
        create_time=timestamp(account.created_at),
        refuses_secrets=account.refuses_secrets,
    )


def scope_grant_message(grant: Grant) -> pb.ScopeGrant:
    return pb.ScopeGrant(
        api_resource=grant.resource.name,
        audience=grant.resource.audience,
        scopes=sorted(grant.held),
    )


def role_grant_message(grant: Grant) -> pb.RoleGrant:
    return pb.RoleGrant(
        api_resource=grant.resource.name,
        audience=grant.resource.audience,
        roles=sorted(grant.held),
    )
