"""`keyhold serve` chooses gRPC's socket transport before grpc is loaded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from keyhold.grpc_transport import EXPERIMENTS, VARIABLE, GrpcTransport, select_transport


def test_posix_turns_off_the_event_engine_listener_and_endpoints() -> None:
    environ: dict[str, str] = {}
    assert select_transport("posix", environ, loaded={}) == EXPERIMENTS["posix"]
    assert environ == {VARIABLE: "-event_engine_listener,-event_engine_for_all_other_endpoints"}


def test_event_engine_leaves_grpc_its_default() -> None:
    environ: dict[str, str] = {}
    assert select_transport("event-engine", environ, loaded={}) == ""
    assert environ == {}


def test_an_operators_own_experiments_are_kept() -> None:
    environ = {VARIABLE: "-event_engine_listener"}
    assert select_transport("posix", environ, loaded={}) == "-event_engine_listener"
    assert environ == {VARIABLE: "-event_engine_listener"}


def test_nothing_changes_once_grpc_is_loaded() -> None:
    """gRPC has read the variable by then: what is reported is what it read."""
    environ: dict[str, str] = {}
    assert select_transport("posix", environ, loaded={"grpc": object()}) == ""
    assert environ == {}


@pytest.mark.parametrize("transport", ["posix", "event-engine"])
def test_the_pinned_grpc_knows_the_experiments(transport: GrpcTransport) -> None:
    """A gRPC that no longer has them logs "Unknown experiment" and ignores them."""
    env = {**os.environ, VARIABLE: EXPERIMENTS[transport], "GRPC_VERBOSITY": "INFO"}
    result = subprocess.run(
        [sys.executable, "-c", "import grpc; grpc.server(None)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "experiment" not in result.stderr.lower(), result.stderr


def test_only_keyhold_serve_chooses_the_transport() -> None:
    """Importing Keyhold, or its tests, leaves gRPC as it comes: `keyhold serve` alone
    sets `GRPC_EXPERIMENTS` (test_shutdown's serve test checks that it does)."""
    env = {key: value for key, value in os.environ.items() if key != VARIABLE}
    probe = "import os, tests, keyhold.server; print(os.environ.get('GRPC_EXPERIMENTS'))"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env=env,
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "None", result.stderr
