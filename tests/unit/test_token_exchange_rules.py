"""What an exchanged token may carry: scopes, the actor chain and its depth, expiry."""

from __future__ import annotations

import pytest

from keyhold.domain.errors import PermissionDenied, Unauthenticated
from keyhold.domain.identity.token_exchange import (
    act_depth,
    delegated_act,
    exchanged_expiry,
    exchanged_scopes,
)

READ, WRITE, EXPORT = "reports.read", "reports.write", "reports.export"


def test_the_scopes_are_those_both_the_roles_and_the_delegation_allow() -> None:
    roles = frozenset({READ, WRITE})
    delegable = frozenset({READ, EXPORT})
    assert exchanged_scopes(frozenset(), roles, delegable) == {READ}
    assert exchanged_scopes(frozenset({READ}), roles, delegable) == {READ}


@pytest.mark.parametrize("asked", [{WRITE}, {EXPORT}, {READ, WRITE}, {"billing.pay"}])
def test_a_scope_outside_either_side_is_refused(asked: set[str]) -> None:
    with pytest.raises(PermissionDenied) as caught:
        exchanged_scopes(frozenset(asked), frozenset({READ, WRITE}), frozenset({READ, EXPORT}))
    assert caught.value.reason == "SCOPE_NOT_GRANTED"


def test_the_newest_actor_is_outermost_and_the_earlier_chain_nested() -> None:
    first = delegated_act(None, "service-accounts/front", max_depth=2)
    assert first == {"sub": "service-accounts/front"}
    second = delegated_act(first, "service-accounts/reports", max_depth=2)
    assert second == {"sub": "service-accounts/reports", "act": first}
    assert act_depth(second) == 2


def test_a_chain_past_the_depth_is_refused() -> None:
    chain = delegated_act(None, "service-accounts/a", max_depth=2)
    chain = delegated_act(chain, "service-accounts/b", max_depth=2)
    with pytest.raises(PermissionDenied) as caught:
        delegated_act(chain, "service-accounts/c", max_depth=2)
    assert caught.value.reason == "DELEGATION_TOO_DEEP"


@pytest.mark.parametrize(
    "act", ["front", {"act": {"sub": "a"}}, {"sub": 7}, {"sub": "a", "act": ["b"]}]
)
def test_a_malformed_act_claim_is_refused(act: object) -> None:
    with pytest.raises(Unauthenticated) as caught:
        delegated_act(act, "service-accounts/front", max_depth=5)
    assert caught.value.reason == "SUBJECT_TOKEN_INVALID"


def test_a_deeply_nested_act_claim_is_refused_without_walking_it_all() -> None:
    act: dict[str, object] = {"sub": "a"}
    for _ in range(10_000):
        act = {"sub": "a", "act": act}
    with pytest.raises(Unauthenticated):
        act_depth(act)


def test_an_exchanged_token_never_outlives_its_subject_token() -> None:
    assert exchanged_expiry(subject_expires_at=1_000, now=900, lifetime_seconds=300) == 1_000
    assert exchanged_expiry(subject_expires_at=2_000, now=900, lifetime_seconds=300) == 1_200
    with pytest.raises(Unauthenticated):
        exchanged_expiry(subject_expires_at=900, now=900, lifetime_seconds=300)
