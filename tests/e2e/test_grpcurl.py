"""Reflection works for operators: the real grpcurl binary lists, describes and calls."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

import grpc
import pytest

from keyhold.server import KeyholdServer

Server = tuple[KeyholdServer, grpc.aio.Channel]
GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")


async def grpcurl(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        GRPCURL, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
def address(server: Server) -> str:
    return f"127.0.0.1:{server[0].port}"


async def test_list_shows_every_service(address: str) -> None:
    code, out, err = await grpcurl("-plaintext", address, "list")
    assert code == 0, err
    assert out.split() == [
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "keyhold.audit.v1.AuditService",
        "keyhold.identity.v1.ApiResourceService",
        "keyhold.identity.v1.IdentityService",
        "keyhold.provider.v1.ProviderService",
    ]


async def test_describe_shows_the_policy_options(address: str) -> None:
    code, out, err = await grpcurl(
        "-plaintext", address, "describe", "keyhold.identity.v1.IdentityService.CreateSession"
    )
    assert code == 0, err
    assert "keyhold.policy.v1.auth) = { public:true }" in out
    assert 'key:RATE_LIMIT_KEY_PEER limit:"30/minute"' in out


async def test_health_check_and_a_public_call(address: str) -> None:
    code, out, err = await grpcurl("-plaintext", address, "grpc.health.v1.Health/Check")
    assert code == 0, err
    assert json.loads(out) == {"status": "SERVING"}
    code, out, err = await grpcurl(
        "-plaintext", address, "keyhold.identity.v1.IdentityService/GetJwks"
    )
    assert code == 0, err
    jwks = json.loads(json.loads(out)["jwks_json"])
    assert jwks["keys"][0]["kty"] == "EC"


async def test_errors_show_their_details(address: str) -> None:
    code, _, err = await grpcurl(
        "-plaintext", address, "keyhold.identity.v1.IdentityService/WhoAmI"
    )
    assert code != 0
    assert "Unauthenticated" in err
    assert "CREDENTIALS_MISSING" in err
