"""One distribution carries the service and the generated stubs, so a client service
can `pip install` it and import both."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_contains_service_and_generated_stubs(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("keyhold-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in [
        "keyhold/server.py",
        "keyhold/identity/v1/identity_service_pb2.py",
        "keyhold/identity/v1/identity_service_pb2.pyi",
        "keyhold/identity/v1/identity_service_pb2_grpc.py",
        "keyhold/identity/v1/identity_service_pb2_grpc.pyi",
        "keyhold/policy/v1/policy_pb2.py",
        "keyhold/adapters/persistence/migrations/env.py",
        "keyhold/adapters/persistence/migrations/versions/0001_signing_keys.py",
    ]:
        assert expected in names, expected
    assert not any(name.startswith(("tests/", "src/", "generated/")) for name in names)
    assert not any(name.startswith("keyhold/__init__") for name in names)  # namespace package
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "keyhold = keyhold.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
