"""generated/ is exactly what proto/ produces: regenerate into a temp dir and compare."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _files(root: Path) -> set[str]:
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    out = tmp_path / "generated"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate_protos.py"), str(out)],
        check=True,
        capture_output=True,
    )
    committed = ROOT / "generated"
    assert _files(out) == _files(committed), "run `make generate` and commit the result"
    stale = [f for f in _files(out) if not filecmp.cmp(out / f, committed / f, shallow=False)]
    assert not stale, f"stale generated files {stale}: run `make generate` and commit"
