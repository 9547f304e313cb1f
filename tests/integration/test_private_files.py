"""Files the server creates are private (directories 0700, files 0600) whatever the
umask, SQLite's -wal and -shm included; looser ones found on start are tightened, and
the log says so."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from keyhold.adapters import private_files
from keyhold.adapters.crypto.aead import AeadKeyRing
from keyhold.adapters.private_files import private_sqlite_database
from tests.support.cli import run_cli
from tests.support.servers import running_server, settings_for, signed_in


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def modes(data: Path) -> dict[str, int]:
    """Every file and directory under `data` (and `data` itself) by relative name."""
    return {str(p.relative_to(data)): mode(p) for p in (data, *data.rglob("*"))}


def expected(found: dict[str, int], data: Path) -> dict[str, int]:
    return {name: 0o700 if (data / name).is_dir() else 0o600 for name in found}


async def test_migrate_makes_the_data_directory_and_database_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYHOLD_")}
    code, out = await run_cli("migrate", env={**env, "KEYHOLD_DATA_DIR": str(data)})
    assert code == 0, out
    found = modes(data)
    assert {".", "keyhold.db"} <= set(found)
    assert found == expected(found, data)


async def test_a_serving_server_keeps_its_files_private_after_a_write(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with running_server(settings_for(data)) as (app, _):
        await signed_in(app)  # written: the -wal and -shm files exist
        found = modes(data)
    assert {
        ".",
        "keyhold.db",
        "keyhold.db-wal",
        "keyhold.db-shm",
        "keys",
        "keys/encryption-keys",
    } <= set(found)
    assert found == expected(found, data)


async def test_looser_files_found_on_start_are_tightened_and_logged(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with running_server(settings_for(data)) as (app, _):
        await signed_in(app)
    loosened = [data, data / "keys", data / "keys" / "encryption-keys", data / "keyhold.db"]
    for path in loosened:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    with capture_logs() as logs:
        async with running_server(settings_for(data)) as (app, _):
            await signed_in(app, "other@example.com")
            found = modes(data)
    assert found == expected(found, data)
    tightened = {
        e["path"]: (e["found"], e["now"]) for e in logs if e["event"] == "permissions_tightened"
    }
    assert {Path(p) for p in tightened} == set(loosened)
    assert tightened[str(data / "keyhold.db")] == ("644", "600")
    assert all(
        entry["log_level"] == "warning"
        for entry in logs
        if entry["event"] == "permissions_tightened"
    )


def test_existing_sqlite_sidecars_are_tightened(tmp_path: Path) -> None:
    database = tmp_path / "db" / "keyhold.db"
    private_sqlite_database(database)
    assert (mode(database.parent), mode(database)) == (0o700, 0o600)
    for suffix in ("-wal", "-shm", "-journal"):
        sidecar = database.with_name(database.name + suffix)
        sidecar.touch(mode=0o666)
        os.chmod(sidecar, 0o666)  # noqa: S103 - loosened on purpose
    private_sqlite_database(database)
    assert {p.name: mode(p) for p in database.parent.iterdir()} == {
        "keyhold.db": 0o600,
        "keyhold.db-wal": 0o600,
        "keyhold.db-shm": 0o600,
        "keyhold.db-journal": 0o600,
    }


def test_a_new_key_directory_and_file_are_private_with_their_parents(tmp_path: Path) -> None:
    key_dir = tmp_path / "state" / "keys"
    AeadKeyRing.load_or_create(key_dir)
    assert (mode(tmp_path / "state"), mode(key_dir)) == (0o700, 0o700)
    assert mode(key_dir / "encryption-keys") == 0o600
    ring = AeadKeyRing.load_or_create(key_dir)  # read again: the same key
    assert ring.primary_key_id == AeadKeyRing.load_or_create(key_dir).primary_key_id


def test_a_directory_that_cannot_be_tightened_is_logged_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "mounted"
    shared.mkdir()
    os.chmod(shared, 0o755)  # noqa: S103 - as a volume might be

    def refused(path: object, mode: int) -> None:
        raise PermissionError(1, "Operation not permitted", str(path))

    monkeypatch.setattr(private_files.os, "chmod", refused)
    with capture_logs() as logs:
        private_files.private_directory(shared)
    assert [(e["event"], e["log_level"], e["path"]) for e in logs] == [
        ("permissions_not_tightened", "error", str(shared))
    ]
