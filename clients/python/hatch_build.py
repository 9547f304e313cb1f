"""An editable install of keyhold-client copies none of the files the wheel takes from
the repository's trees: those trees go on sys.path (`dev-mode-dirs`), so that edits take
effect and no stale copy shadows the server's `keyhold.domain`. Hatchling copies its
`force-include` map into editable installs unless a build hook gives it one of its own,
so this hook gives it just the README."""

from __future__ import annotations

from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class EditableTakesTheTrees(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version == "editable":
            build_data["force_include_editable"] = {"README.md": "keyhold/client-README.md"}
