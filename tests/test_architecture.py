"""Arrows point inward: the domain and application layers import no framework, and the
api layer no SQLAlchemy (DESIGN.md §1). Also: no naive UTC timestamps anywhere."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "keyhold"
FRAMEWORKS = (
    "grpc",
    "google.protobuf",
    "google.rpc",
    "sqlalchemy",
    "jwt",
    "alembic",
    "limits",
    "prometheus_client",
    "opentelemetry",
)
GENERATED = ("keyhold.identity", "keyhold.audit", "keyhold.provider", "keyhold.policy")

FORBIDDEN = {
    "domain": (*FRAMEWORKS, *GENERATED, "keyhold.api", "keyhold.adapters", "keyhold.application"),
    "application": (*FRAMEWORKS, *GENERATED, "keyhold.api", "keyhold.adapters"),
    "api": ("sqlalchemy", "alembic"),
}


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_point_inward(layer: str) -> None:
    files = sorted((SRC / layer).rglob("*.py"))
    assert files
    violations = [
        f"{path.relative_to(SRC)} imports {name}"
        for path in files
        for name in _imports(path)
        if any(name == banned or name.startswith(banned + ".") for banned in FORBIDDEN[layer])
    ]
    assert not violations


def test_the_check_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from sqlalchemy import select\nimport grpc.aio\n")
    assert _imports(bad) == ["sqlalchemy", "grpc.aio"]


def test_no_naive_utcnow() -> None:
    offenders = [p for p in SRC.rglob("*.py") if "utcnow" in p.read_text()]
    assert not offenders
