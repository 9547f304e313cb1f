"""Data files shipped with the package."""

from __future__ import annotations

from importlib import resources


def common_passwords() -> frozenset[str]:
    """The 10,000 most common passwords, lower-cased."""
    text = resources.files(__name__).joinpath("common-passwords.txt").read_text("utf-8")
    return frozenset(
        line.strip().lower() for line in text.splitlines() if line and not line.startswith("#")
    )
