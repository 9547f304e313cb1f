"""Two distributions: keyhold-client (the generated stubs and `keyhold.client`, for other
services) and keyhold, the server, which depends on it and carries none of its files.
A service installs keyhold-client alone, with few dependencies, and imports both."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLIENT_FILES = (
    "keyhold/client/__init__.py",
    "keyhold/client/credentials.py",
    "keyhold/access_token_verification.py",
    "keyhold/jose_canonical.py",
    "keyhold/domain/__init__.py",
    "keyhold/domain/principal.py",
    "keyhold/identity/v1/identity_service_pb2.py",
    "keyhold/identity/v1/identity_service_pb2.pyi",
    "keyhold/identity/v1/identity_service_pb2_grpc.py",
    "keyhold/identity/v1/identity_service_pb2_grpc.pyi",
    "keyhold/policy/v1/policy_pb2.py",
)


def _wheels(directory: Path) -> tuple[Path, Path]:
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
            str(directory),
            str(ROOT / "clients" / "python"),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (client,) = directory.glob("keyhold_client-*.whl")
    (server,) = directory.glob("keyhold-*.whl")
    return client, server


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _wheels(tmp_path_factory.mktemp("wheels"))


@pytest.mark.slow
def test_the_client_wheel_carries_the_stubs_and_the_library(wheels: tuple[Path, Path]) -> None:
    client, _ = wheels
    names = set(zipfile.ZipFile(client).namelist())
    for expected in CLIENT_FILES:
        assert expected in names, expected
    assert not any(name.startswith("keyhold/adapters/") for name in names)
    assert not any(name.endswith(".pyc") for name in names)
    assert "keyhold/server.py" not in names


@pytest.mark.slow
def test_the_server_wheel_depends_on_the_client_and_repeats_none_of_it(
    wheels: tuple[Path, Path],
) -> None:
    client, server = wheels
    names = set(zipfile.ZipFile(server).namelist())
    for expected in [
        "keyhold/server.py",
        "keyhold/domain/call.py",
        "keyhold/adapters/persistence/migrations/env.py",
        "keyhold/adapters/persistence/migrations/versions/0001_signing_keys.py",
    ]:
        assert expected in names, expected
    client_names = {n for n in zipfile.ZipFile(client).namelist() if not n.startswith("keyhold_")}
    assert not names & client_names
    assert not any(name.startswith(("tests/", "src/", "generated/")) for name in names)
    assert not any(name.startswith("keyhold/__init__") for name in names)  # namespace package
    metadata = next(n for n in names if n.endswith("METADATA"))
    requires = zipfile.ZipFile(server).read(metadata).decode()
    assert "Requires-Dist: keyhold-client==0.1.0" in requires
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "keyhold = keyhold.cli:main" in zipfile.ZipFile(server).read(entry_points).decode()


@pytest.mark.slow
def test_a_service_installs_the_client_alone(wheels: tuple[Path, Path], tmp_path: Path) -> None:
    """From the package index, as another service would: at most 10 distributions, and
    the stubs and the library import without the server."""
    client, _ = wheels
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(client)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format", "json", "--exclude", "pip"],
        check=True,
        capture_output=True,
        text=True,
    )
    installed = {entry["name"].lower() for entry in json.loads(listed.stdout)} - {"setuptools"}
    assert "keyhold-client" in installed
    assert len(installed) <= 10, sorted(installed)
    assert not installed & {"sqlalchemy", "starlette", "alembic", "asyncpg"}
    probe = (
        "import keyhold.client, keyhold.identity.v1.identity_service_pb2_grpc as stubs\n"
        "from keyhold.client import ServiceAccountCredentials, TokenVerifier, OnBehalfOf\n"
        "import importlib.util\n"
        "assert importlib.util.find_spec('keyhold.server') is None\n"
        "print(stubs.IdentityServiceStub.__name__)"
    )
    ran = subprocess.run(
        [str(python), "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path
    )
    assert ran.stdout.strip() == "IdentityServiceStub"
