"""Anchored checkpoints (issue 24): signed statements of the audit chain, written out of
the database to witnesses the writer cannot rewrite, that reveal the two attacks the
hash chain alone cannot: deleting the newest records (the chain that remains is still
valid) and deleting the oldest ones.

Each anchor names the chain's head (sequence and hash) and its first retained record at
the time, and the digest of the anchor before it, so anchors form a chain of their own:
a witness's anchors removed, replaced or reordered break it. Comparing the anchors with
the trail yields findings, each with a reason of its own and the sequences involved:

- `RECORDS_ALTERED`: a retained record at an anchored sequence no longer has the hash
  the anchor recorded;
- `RECORDS_MISSING_AT_HEAD`: the trail ends before a sequence an anchor saw;
- `RECORDS_MISSING_AT_TAIL`: the trail's first record is not the first record the
  newest anchor names (records deleted at the tail without a checkpoint saying so);
- `CHECKPOINTS_MISSING`: an anchor's link does not name the anchor before it;
- `CHECKPOINTS_OUT_OF_ORDER`: anchors whose sequences go backwards.

The signature of each anchor is checked elsewhere (an adapter); these rules judge what
verified anchors say."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

ANCHOR_TAG = b"keyhold.audit.anchor.v1\x00"
NO_ANCHOR = bytes(32)  # what the first anchor links to


@dataclass(frozen=True, slots=True)
class Anchor:
    sequence: int  # the chain's head when the anchor was written
    head_hash: bytes
    first_sequence: int  # the first retained record then
    first_hash: bytes
    time: datetime
    previous: bytes  # the digest of the anchor before, NO_ANCHOR for the first

    def canonical(self) -> bytes:
        document = {
            "first_hash": self.first_hash.hex(),
            "first_sequence": self.first_sequence,
            "head_hash": self.head_hash.hex(),
            "previous": self.previous.hex(),
            "sequence": self.sequence,
            "time": self.time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()

    def digest(self) -> bytes:
        return hashlib.sha256(ANCHOR_TAG + self.canonical()).digest()


def next_anchor(
    previous: Anchor | None,
    head: tuple[int, bytes],
    first: tuple[int, bytes],
    now: datetime,
) -> Anchor | None:
    """The anchor to write now, or None when the head has not moved since `previous`
    and the first retained record is the same (nothing new to witness)."""
    if (
        previous is not None
        and previous.sequence == head[0]
        and previous.first_sequence == first[0]
    ):
        return None
    link = NO_ANCHOR if previous is None else previous.digest()
    return Anchor(head[0], head[1], first[0], first[1], now, link)


@dataclass(frozen=True, slots=True)
class Finding:
    reason: str
    message: str
    sequences: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class TrailState:
    """What the comparison needs of the trail: its first and last retained sequences
    (None when empty) and the hash of a retained record (None when it is not)."""

    first_sequence: int | None
    head_sequence: int | None
    hash_at: Callable[[int], bytes | None]


def anchor_findings(anchors: Sequence[Anchor], trail: TrailState) -> list[Finding]:
    """Everything the anchors (oldest first, signatures verified) reveal about the
    trail; empty when they agree."""
    findings = _chain_findings(anchors)
    if not anchors:
        return findings
    newest = anchors[-1]
    head = trail.head_sequence
    missing_head = [a.sequence for a in anchors if head is None or a.sequence > head]
    if missing_head:
        findings.append(
            Finding(
                "RECORDS_MISSING_AT_HEAD",
                f"the trail ends at {head or 0}, before sequences that checkpoints saw",
                (head or 0, max(missing_head)),
            )
        )
    altered = [
        sequence
        for anchor in anchors
        for sequence, expected in (
            (anchor.sequence, anchor.head_hash),
            (anchor.first_sequence, anchor.first_hash),
        )
        if (found := trail.hash_at(sequence)) is not None and found != expected
    ]
    if altered:
        findings.append(
            Finding(
                "RECORDS_ALTERED",
                "records at checkpointed sequences no longer have the checkpointed hash",
                tuple(sorted(set(altered))),
            )
        )
    first = trail.first_sequence
    if first is not None and first != newest.first_sequence:
        findings.append(
            Finding(
                "RECORDS_MISSING_AT_TAIL",
                f"the trail starts at {first}; the newest checkpoint says {newest.first_sequence}",
                (newest.first_sequence, first),
            )
        )
    return findings


def _chain_findings(anchors: Sequence[Anchor]) -> list[Finding]:
    findings: list[Finding] = []
    broken = [
        later.sequence
        for earlier, later in itertools.pairwise(anchors)
        if later.previous != earlier.digest()
    ]
    if broken:
        findings.append(
            Finding(
                "CHECKPOINTS_MISSING",
                "a checkpoint does not link to the one before it: checkpoints were "
                "removed or replaced",
                tuple(broken),
            )
        )
    backwards = [
        later.sequence
        for earlier, later in itertools.pairwise(anchors)
        if later.sequence < earlier.sequence
    ]
    if backwards:
        findings.append(
            Finding(
                "CHECKPOINTS_OUT_OF_ORDER",
                "checkpoints go backwards in the chain",
                tuple(backwards),
            )
        )
    return findings
