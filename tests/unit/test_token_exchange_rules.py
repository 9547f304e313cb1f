"""What an exchanged token may carry: scopes, and the actor chain and its depth."""

from __future__ import annotations

import pytest

from keyhold.domain.errors import PermissionDenied
from keyhold.domain.identity.token_exchange import delegated_chain, exchanged_scopes

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


def test_nothing_both_held_and_delegable_is_refused_rather_than_an_empty_token() -> None:
    with pytest.raises(PermissionDenied) as caught:
        exchanged_scopes(frozenset(), frozenset({WRITE}), frozenset({READ}))
    assert caught.value.reason == "SCOPE_NOT_GRANTED"


def test_the_newest_actor_comes_first() -> None:
    first = delegated_chain((), "service-accounts/front", max_depth=2)
    assert first == ("service-accounts/front",)
    second = delegated_chain(first, "service-accounts/reports", max_depth=2)
    assert second == ("service-accounts/reports", "service-accounts/front")


def test_a_chain_past_the_depth_is_refused() -> None:
    chain = delegated_chain((), "service-accounts/a", max_depth=2)
    chain = delegated_chain(chain, "service-accounts/b", max_depth=2)
    with pytest.raises(PermissionDenied) as caught:
        delegated_chain(chain, "service-accounts/c", max_depth=2)
    assert caught.value.reason == "DELEGATION_TOO_DEEP"
