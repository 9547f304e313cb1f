"""The README's grpcurl cookbook, run as written against a fresh server: every command
succeeds or fails as shown, and each answer has the shape and the stable values the
README shows (ids, times, hashes and tokens differ from run to run)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from keyhold.server import KeyholdServer

README = Path(__file__).resolve().parents[2] / "README.md"
README_ADDRESS = "127.0.0.1:50051"
# Values that do not change between runs; every other leaf is compared by type only.
STABLE_FIELDS = {
    "email",
    "display_name",
    "state",
    "roles",
    "subject_type",
    "actor_type",
    "action",
    "outcome",
    "resource_type",
    "user_agent",
}
HEX = re.compile(r"[0-9a-f]{16,}")


@dataclass(frozen=True)
class Step:
    command: str
    expected: str


def cookbook(readme: str) -> list[Step]:
    section = readme.split("## grpcurl cookbook", 1)[1].split("\n## ", 1)[0]
    steps: list[Step] = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        lines = block.splitlines()
        index = 0
        while index < len(lines):
            assert lines[index].startswith("$ "), lines[index]
            command = [lines[index][2:]]
            while command[-1].endswith("\\"):
                index += 1
                command.append(lines[index])
            index += 1
            output = []
            while index < len(lines) and not lines[index].startswith("$ "):
                output.append(lines[index])
                index += 1
            steps.append(Step("\n".join(command), "\n".join(output)))
    return steps


def _shape(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {name: _shape(item, name) for name, item in value.items()}
    if isinstance(value, list):
        return [_shape(item, key) for item in value]
    return value if key in STABLE_FIELDS else type(value).__name__


def _reason(text: str) -> str:
    match = re.search(r'"reason":"(\w+)"', text)
    assert match, text
    return match.group(1)


def check(step: Step, code: int, output: str) -> None:
    expected, actual = step.expected.strip(), output.strip()
    if expected.startswith("ERROR:"):
        assert code != 0, step.command
        assert expected.splitlines()[1] == actual.splitlines()[1]  # "Code: ..."
        assert _reason(expected) == _reason(actual)
        return
    assert code == 0, f"{step.command}\n{output}"
    if expected.startswith("{"):
        assert _shape(json.loads(actual)) == _shape(json.loads(expected)), step.command
    else:
        assert HEX.sub("<hex>", actual) == HEX.sub("<hex>", expected), step.command


async def run_all(steps: list[Step], address: str, data_dir: Path, cwd: Path) -> str:
    """One shell runs every step, so variables carry over as in a terminal."""
    script = []
    for number, step in enumerate(steps):
        script.append(f"printf '<<<step {number}>>>\\n'")
        script.append("{ " + step.command.replace(README_ADDRESS, address) + "\n} 2>&1")
        script.append(f"printf '\\n<<<code {number} %d>>>\\n' $?")
    env = {key: value for key, value in os.environ.items() if not key.startswith("KEYHOLD_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["KEYHOLD_DATA_DIR"] = str(data_dir)
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        "\n".join(script),
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    return out.decode()


@pytest.mark.slow
async def test_the_cookbook_runs_as_written(
    server: tuple[KeyholdServer, grpc.aio.Channel], tmp_path: Path
) -> None:
    steps = cookbook(README.read_text())
    assert len(steps) > 10
    shell = tmp_path / "shell"
    shell.mkdir()
    # The `server` fixture keeps its database in tmp_path: the CLI steps share it.
    transcript = await run_all(steps, f"127.0.0.1:{server[0].port}", tmp_path, shell)
    for number, step in enumerate(steps):
        match = re.search(
            rf"<<<step {number}>>>\n(.*?)\n<<<code {number} (\d+)>>>", transcript, re.S
        )
        assert match, transcript
        check(step, int(match.group(2)), match.group(1))
