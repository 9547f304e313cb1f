""".env.example documents every setting, with its real default, and the docs name only
settings and commands that exist."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from keyhold.cli import _parser
from keyhold.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / ".env.example"
DOCUMENTS = [
    ROOT / "README.md",
    ROOT / "deploy" / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
]
ENTRY = re.compile(r"^(# )?(KEYHOLD_\w+)=(.*)$")
NOT_SETTINGS = {"KEYHOLD_TEST_DATABASE_URL"}  # read by the test suite, not the service


def _entries() -> dict[str, tuple[bool, str]]:
    """Setting name → (commented out, value)."""
    found: dict[str, tuple[bool, str]] = {}
    for line in EXAMPLE.read_text().splitlines():
        match = ENTRY.match(line)
        if match:
            assert match.group(2) not in found, f"{match.group(2)} twice"
            found[match.group(2)] = (bool(match.group(1)), match.group(3))
    return found


def test_every_setting_is_in_the_example() -> None:
    documented = set(_entries())
    missing = {f"KEYHOLD_{name.upper()}" for name in Settings.model_fields} - documented
    assert not missing


def test_every_entry_is_explained_by_the_comment_above_it() -> None:
    lines = EXAMPLE.read_text().splitlines()
    for number, line in enumerate(lines):
        match = ENTRY.match(line)
        if match and not match.group(1):
            above = lines[number - 1]
            assert above.startswith("# "), match.group(2)
            assert not ENTRY.match(above), match.group(2)


def test_the_example_as_a_dotenv_file_changes_nothing() -> None:
    """Each uncommented value is the default, so copying the file to .env is harmless."""
    from_example = Settings(_env_file=EXAMPLE)  # type: ignore[call-arg]
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert from_example.model_dump() == defaults.model_dump()


def test_unset_defaults_are_commented_out() -> None:
    entries = _entries()
    for name, model_field in Settings.model_fields.items():
        if model_field.default is None or model_field.default_factory is not None:
            commented, _ = entries[f"KEYHOLD_{name.upper()}"]
            assert commented, f"KEYHOLD_{name.upper()} has no fixed default"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.relative_to(ROOT).as_posix())
def test_the_docs_name_only_documented_settings(document: Path) -> None:
    named = set(re.findall(r"\bKEYHOLD_[A-Z0-9_]*[A-Z0-9]\b", document.read_text()))
    unknown = named - set(_entries()) - NOT_SETTINGS
    assert not unknown


def _commands(parser: argparse.ArgumentParser, prefix: str = "") -> set[str]:
    found = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                found.add(f"{prefix}{name}")
                found |= _commands(subparser, f"{prefix}{name} ")
    return found


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.relative_to(ROOT).as_posix())
def test_the_docs_name_only_real_commands(document: Path) -> None:
    commands = _commands(_parser())
    named = re.findall(
        r"(?:^|[\s`(/])keyhold ([a-z][a-z-]*(?: [a-z][a-z-]*)?)", document.read_text(), re.M
    )
    assert named or document.name != "operations.md"
    for words in named:
        first = words.split(" ")[0]
        assert first in commands, f"keyhold {words}"
        if any(command.startswith(f"{first} ") for command in commands):
            assert words in commands, f"keyhold {words}"


def test_the_readme_table_shows_the_real_defaults() -> None:
    rows = re.findall(
        r"^\| `(KEYHOLD_\w+)` \| `([^`]*)` \|", (ROOT / "README.md").read_text(), re.M
    )
    assert rows
    entries = _entries()
    for name, default in rows:
        assert entries[name] == (False, default), name
