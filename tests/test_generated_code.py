"""generated/ is exactly what proto/ produces: regenerate into a temp dir and compare."""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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


TYPESCRIPT = ROOT / "clients" / "typescript"


def test_the_typescript_contracts_are_fresh(tmp_path: Path) -> None:
    """clients/typescript/gen is exactly what buf.gen.yaml makes of proto/, with the
    locked protoc-gen-es (`make test` installs it; without it, the test skips unless
    under CI)."""
    plugin = TYPESCRIPT / "node_modules" / ".bin" / "protoc-gen-es"
    if not plugin.exists():
        if os.environ.get("CI"):
            pytest.fail("CI needs `npm ci --prefix clients/typescript` (make test runs it)")
        pytest.skip("the packages of clients/typescript are not installed")
    template = yaml.safe_load((ROOT / "buf.gen.yaml").read_text())
    (plugin_config,) = template["plugins"]
    plugin_config["out"] = str(tmp_path / "gen")
    plugin_config["local"] = str(plugin)
    subprocess.run(
        [str(Path(sys.executable).parent / "buf"), "generate", "--template", json.dumps(template)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    out, committed = tmp_path / "gen", TYPESCRIPT / "gen"
    assert _files(out) == _files(committed), "run `make generate` and commit the result"
    stale = [f for f in _files(out) if not filecmp.cmp(out / f, committed / f, shallow=False)]
    assert not stale, f"stale TypeScript files {stale}: run `make generate` and commit"
