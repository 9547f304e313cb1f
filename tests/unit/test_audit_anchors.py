"""What anchored checkpoints reveal about the trail: each attack issue 24 names is found
with its own reason and the sequences involved, and an honest trail yields nothing,
also after a checkpointed prune."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from keyhold.domain.audit.anchors import (
    NO_ANCHOR,
    Anchor,
    TrailState,
    anchor_findings,
    next_anchor,
)

T0 = datetime(2026, 12, 5, tzinfo=UTC)


def _hash(sequence: int) -> bytes:
    return hashlib.sha256(f"record {sequence}".encode()).digest()


def _trail(first: int, head: int, altered: frozenset[int] = frozenset()) -> TrailState:
    def hash_at(sequence: int) -> bytes | None:
        if not first <= sequence <= head:
            return None
        return b"\x00" * 32 if sequence in altered else _hash(sequence)

    return TrailState(first, head, hash_at)


def _anchors(*spans: tuple[int, int]) -> list[Anchor]:
    """Anchors written in turn, each (first retained, head)."""
    written: list[Anchor] = []
    for number, (first, head) in enumerate(spans):
        anchor = next_anchor(
            written[-1] if written else None,
            (head, _hash(head)),
            (first, _hash(first)),
            T0 + timedelta(minutes=number),
        )
        assert anchor is not None
        written.append(anchor)
    return written


def _reasons(anchors: list[Anchor], trail: TrailState) -> dict[str, tuple[int, ...]]:
    return {finding.reason: finding.sequences for finding in anchor_findings(anchors, trail)}


def test_anchors_chain_and_an_unmoved_head_writes_none() -> None:
    first, second = _anchors((1, 10), (1, 20))
    assert first.previous == NO_ANCHOR
    assert second.previous == first.digest()
    assert next_anchor(second, (20, _hash(20)), (1, _hash(1)), T0) is None


def test_an_honest_trail_has_no_findings_also_after_a_checkpointed_prune() -> None:
    assert _reasons(_anchors((1, 10), (1, 20)), _trail(1, 25)) == {}
    # `keyhold audit prune` writes an anchor naming the new first record first.
    assert _reasons(_anchors((1, 10), (1, 20), (15, 20)), _trail(15, 30)) == {}


def test_deleting_the_newest_records_is_found() -> None:
    assert _reasons(_anchors((1, 10), (1, 20)), _trail(1, 17)) == {
        "RECORDS_MISSING_AT_HEAD": (17, 20)
    }


def test_deleting_the_oldest_records_or_moving_the_boundary_is_found() -> None:
    assert _reasons(_anchors((1, 10), (1, 20)), _trail(6, 25)) == {
        "RECORDS_MISSING_AT_TAIL": (1, 6)
    }


def test_an_edited_record_at_a_checkpointed_sequence_is_found() -> None:
    trail = _trail(1, 25, altered=frozenset({10}))
    assert _reasons(_anchors((1, 10), (1, 20)), trail) == {"RECORDS_ALTERED": (10,)}


def test_a_replaced_checkpoint_breaks_the_chain_of_checkpoints() -> None:
    first, second, third = _anchors((1, 10), (1, 20), (1, 30))
    forged = replace(second, head_hash=_hash(999))
    assert _reasons([first, forged, third], _trail(1, 30)) == {
        "CHECKPOINTS_MISSING": (30,),
        "RECORDS_ALTERED": (20,),
    }
    assert _reasons([first, third], _trail(1, 30)) == {"CHECKPOINTS_MISSING": (30,)}


def test_swapped_checkpoints_are_out_of_order() -> None:
    first, second, third = _anchors((1, 10), (1, 20), (1, 30))
    found = _reasons([first, third, second], _trail(1, 30))
    assert found["CHECKPOINTS_OUT_OF_ORDER"] == (20,)
    assert "CHECKPOINTS_MISSING" in found
