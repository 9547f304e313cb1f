"""The audit feed wakes streams on sequences announced by any replica."""

from __future__ import annotations

import pytest

from keyhold.adapters.persistence.audit.audit_feed import LocalAuditFeed


@pytest.mark.parametrize("payload", ["\u00b2", "\uff11\uff12", "\u0661", "", "-1", "1.5", " 7"])
def test_an_announcement_that_is_not_ascii_digits_is_ignored(payload: str) -> None:
    feed = LocalAuditFeed()
    feed.announced("5")
    feed.announced(payload)
    assert feed._latest == 5


def test_an_announced_sequence_moves_the_feed_on() -> None:
    feed = LocalAuditFeed()
    feed.announced("12")
    assert feed._latest == 12
