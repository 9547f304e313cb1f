"""The audit action registry and the code agree: every registered action is recorded
somewhere, and nothing records an action by a bare string."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from keyhold.domain.audit.actions import REGISTRY, Action

SRC = Path(__file__).resolve().parent.parent / "src" / "keyhold"
REGISTRY_FILE = SRC / "domain" / "audit" / "actions.py"
RECORDING_CALLS = {"attempt"}


def _sources() -> dict[Path, str]:
    return {path: path.read_text() for path in SRC.rglob("*.py") if path != REGISTRY_FILE}


def test_every_action_has_registry_info() -> None:
    assert set(REGISTRY) == set(Action)
    assert all(re.fullmatch(r"[a-z]+(\.[a-z_]+)+", action.value) for action in Action)


def test_every_registered_action_is_recorded_by_some_handler() -> None:
    used = {
        name for text in _sources().values() for name in re.findall(r"\bAction\.([A-Z_]+)\b", text)
    }
    unused = {action.name for action in Action} - used
    assert not unused, f"registered but never recorded: {sorted(unused)}"


def test_no_handler_records_an_action_by_string() -> None:
    offenders = []
    for path, text in _sources().items():
        for node in ast.walk(ast.parse(text)):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in RECORDING_CALLS
                and node.args
                and not (
                    isinstance(node.args[0], ast.Attribute)
                    and isinstance(node.args[0].value, ast.Name)
                    and node.args[0].value.id == "Action"
                )
            ):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not offenders, f"record actions as Action members: {offenders}"


def test_rpc_actions_name_real_methods() -> None:
    from keyhold.wiring.grpc_api import SERVICES

    methods = {f"/{s.full_name}/{m.name}" for s in SERVICES for m in s.methods}
    assert {info.rpc for info in REGISTRY.values() if info.rpc} <= methods
