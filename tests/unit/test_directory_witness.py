"""A directory witness writes each checkpoint once, owner-only, never over another, and
lists them in chain order."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from keyhold.adapters.witnesses.directory import DirectoryWitness, WitnessConflict


async def test_checkpoints_are_written_once_and_listed_in_order(tmp_path: Path) -> None:
    witness = DirectoryWitness(tmp_path / "witness")
    later = await witness.export(20, b"\x02" * 32, "b.b.b")
    earlier = await witness.export(10, b"\x01" * 32, "a.a.a")
    assert stat.S_IMODE(later.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "witness").stat().st_mode) == 0o700
    assert [signed for _, signed in await witness.checkpoints()] == ["a.a.a", "b.b.b"]
    assert await witness.export(10, b"\x01" * 32, "a.a.a") == earlier  # the same again


async def test_a_checkpoint_file_is_never_overwritten(tmp_path: Path) -> None:
    witness = DirectoryWitness(tmp_path)
    path = await witness.export(10, b"\x01" * 32, "a.a.a")
    with pytest.raises(WitnessConflict):
        await witness.export(10, b"\x01" * 32, "forged.forged.forged")
    assert path.read_text() == "a.a.a"


async def test_an_absent_directory_holds_no_checkpoints(tmp_path: Path) -> None:
    assert await DirectoryWitness(tmp_path / "nowhere").checkpoints() == []
