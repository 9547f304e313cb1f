"""Arrows point inward (docs/architecture.md, "Layers"). The rules themselves are the
import-linter contracts in pyproject.toml's `[tool.importlinter]`: `make lint` checks
them, and so does this test, so that `make test` alone also refuses an import that
points outward. Naive UTC timestamps are ruff's to refuse (DTZ, and the banned
`datetime.utcnow`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def test_import_contracts_are_kept() -> None:
    result = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=ROOT,  # its pyproject.toml holds the contracts
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
