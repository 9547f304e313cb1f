"""Transport security: TLS from configured files, mutual TLS against a client CA, the
client certificate's names in the policy layer, no accidental plaintext, and
certificates replaced without a restart."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import ssl
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from keyhold.api.pipeline.authentication import transport_identity
from keyhold.api.policy import MethodPolicy
from keyhold.api.servicers.identity import IdentityServicer
from keyhold.api.tls import TlsConfigurationError
from keyhold.client import tls_channel_credentials
from keyhold.domain.call import current_call
from keyhold.identity.v1 import identity_service_pb2 as pb
from keyhold.identity.v1 import identity_service_pb2_grpc as pb_grpc
from keyhold.server import build_server
from tests.support.pki import CertificateAuthority, Pki, make_pki, served_serial
from tests.support.servers import bearer, running_server, settings_for, signed_in
from tests.support.status import rich_error

WHOAMI = "/keyhold.identity.v1.IdentityService/WhoAmI"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def own_pki(tmp_path: Path) -> Pki:
    """A private PKI: the reload tests overwrite the server's files."""
    directory = tmp_path / "pki"
    directory.mkdir()
    return make_pki(directory)


def tls(pki: Pki, *, mutual: bool) -> dict[str, Any]:
    return {
        "tls_cert_file": pki.server_cert,
        "tls_key_file": pki.server_key,
        "tls_client_ca_file": pki.ca_file if mutual else None,
    }


async def check_health(channel: grpc.aio.Channel) -> int:
    response = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=5
    )
    status: int = response.status
    return status


async def refused_connection(target: str, credentials: grpc.ChannelCredentials | None) -> str:
    """The details of the failure when a channel of this kind calls `target`."""
    channel = (
        grpc.aio.insecure_channel(target)
        if credentials is None
        else grpc.aio.secure_channel(target, credentials)
    )
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await check_health(channel)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    return caught.value.details() or ""


async def test_calls_succeed_over_tls_and_plaintext_clients_are_refused(
    tmp_path: Path, pki: Pki
) -> None:
    settings = settings_for(tmp_path, **tls(pki, mutual=False))
    async with running_server(settings, pki.credentials(client=None)) as (app, channel):
        assert await check_health(channel) == health_pb2.HealthCheckResponse.SERVING
        token, user = await signed_in(app)
        answer = await pb_grpc.IdentityServiceStub(channel).WhoAmI(
            pb.WhoAmIRequest(), metadata=bearer(token)
        )
        assert answer.subject == user
        await refused_connection(f"127.0.0.1:{app.port}", None)
        # A client that does not trust the issuing CA refuses the server.
        stranger_ca = CertificateAuthority("Unrelated").write(tmp_path, "unrelated")
        await refused_connection(f"127.0.0.1:{app.port}", tls_channel_credentials(stranger_ca))


async def test_mutual_tls_admits_only_clients_with_a_certificate_from_the_client_ca(
    tmp_path: Path, pki: Pki
) -> None:
    settings = settings_for(tmp_path, **tls(pki, mutual=True))
    async with running_server(settings, pki.credentials()) as (app, channel):
        assert await check_health(channel) == health_pb2.HealthCheckResponse.SERVING
        target = f"127.0.0.1:{app.port}"
        await refused_connection(target, pki.credentials(client=None))
        await refused_connection(target, pki.credentials(client="stranger"))
        await refused_connection(target, None)


@pytest.fixture
def whoami_requires_mtls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every method's policy from the protos, but WhoAmI demands mutual TLS."""
    import keyhold.wiring.grpc_api

    load = keyhold.wiring.grpc_api.load_policies

    def load_with_mtls(services: Any) -> dict[str, MethodPolicy]:
        policies = load(services)
        policies[WHOAMI] = dataclasses.replace(policies[WHOAMI], require_mtls=True)
        return policies

    monkeypatch.setattr(keyhold.wiring.grpc_api, "load_policies", load_with_mtls)


@pytest.mark.parametrize("transport", ["mutual TLS", "TLS", "plaintext"])
@pytest.mark.usefixtures("whoami_requires_mtls")
async def test_a_method_that_requires_mtls_refuses_other_connections(
    tmp_path: Path, pki: Pki, transport: str
) -> None:
    overrides, credentials = {
        "mutual TLS": (tls(pki, mutual=True), pki.credentials()),
        "TLS": (tls(pki, mutual=False), pki.credentials(client=None)),
        "plaintext": ({}, None),
    }[transport]
    settings = settings_for(tmp_path, **overrides)
    async with running_server(settings, credentials) as (app, channel):
        token, user = await signed_in(app)
        whoami = pb_grpc.IdentityServiceStub(channel).WhoAmI(
            pb.WhoAmIRequest(), metadata=bearer(token)
        )
        if transport == "mutual TLS":
            assert (await whoami).subject == user
            return
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await whoami
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "MTLS_REQUIRED")
    assert error.error_info is not None
    assert error.error_info.domain == "keyhold.identity"


@pytest.fixture
def whoami_reports_the_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    """WhoAmI answers with what the pipeline put in the call context about the connection."""

    async def transport(self: Any, request: pb.WhoAmIRequest, context: Any) -> pb.WhoAmIResponse:
        seen = current_call().transport
        return pb.WhoAmIResponse(
            subject=f"{seen.security_type} {seen.is_mutual_tls} {seen.common_name}",
            roles=list(seen.subject_alternative_names),
            # What gRPC itself says of the connection, asked for here and now.
            session=transport_identity(context.auth_context()).security_type,
        )

    monkeypatch.setattr(IdentityServicer, "WhoAmI", transport)


@pytest.mark.usefixtures("whoami_reports_the_transport")
async def test_the_client_certificate_names_reach_the_call_context(
    tmp_path: Path, pki: Pki
) -> None:
    async with running_server(
        settings_for(tmp_path, **tls(pki, mutual=True)), pki.credentials()
    ) as (
        app,
        channel,
    ):
        token, _ = await signed_in(app)
        answer = await pb_grpc.IdentityServiceStub(channel).WhoAmI(
            pb.WhoAmIRequest(), metadata=bearer(token)
        )
    assert answer.subject == "ssl True billing-service"
    assert answer.session == "ssl"
    assert list(answer.roles) == ["spiffe://example.test/ns/prod/sa/billing"]
    async with running_server(settings_for(tmp_path)) as (app, channel):
        answer = await pb_grpc.IdentityServiceStub(channel).WhoAmI(
            pb.WhoAmIRequest(), metadata=bearer((await signed_in(app, "b@example.com"))[0])
        )
    assert answer.subject == "insecure False "  # made once for a plaintext server
    assert answer.session == "insecure"  # and the same as gRPC's own, per call
    assert not answer.roles


@pytest.mark.parametrize("address", ["0.0.0.0:0", "[::]:0"])
async def test_plaintext_on_a_non_loopback_address_refuses_to_start(
    tmp_path: Path, address: str
) -> None:
    app = await build_server(settings_for(tmp_path, listen_address=address))
    try:
        with pytest.raises(TlsConfigurationError, match="refusing to serve plaintext"):
            await app.start()
        assert app.port == 0
    finally:
        await app.stop(grace=0)


async def test_plaintext_on_any_address_when_explicitly_allowed(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, listen_address="0.0.0.0:0", allow_plaintext=True)
    app = await build_server(settings)
    try:
        port = await app.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert await check_health(channel) == health_pb2.HealthCheckResponse.SERVING
    finally:
        await app.stop(grace=0)


async def test_new_connections_get_a_replaced_certificate_without_a_restart(
    tmp_path: Path, own_pki: Pki
) -> None:
    pki = own_pki
    settings = settings_for(tmp_path, **tls(pki, mutual=True))
    async with running_server(settings, pki.credentials()) as (app, channel):
        assert await asyncio.to_thread(served_serial, app.port, pki) == pki.server.serial
        assert await check_health(channel) == health_pb2.HealthCheckResponse.SERVING
        renewed = pki.ca.server()
        pki.replace_server_certificate(renewed)
        assert await asyncio.to_thread(served_serial, app.port, pki) == renewed.serial
        assert app.certificates is not None
        assert app.certificates.current.serial_number == renewed.serial
        # The connection made before the swap carries on.
        assert await check_health(channel) == health_pb2.HealthCheckResponse.SERVING
        async with grpc.aio.secure_channel(f"127.0.0.1:{app.port}", pki.credentials()) as fresh:
            assert await check_health(fresh) == health_pb2.HealthCheckResponse.SERVING


async def test_a_replacement_that_does_not_load_leaves_the_current_certificate(
    tmp_path: Path, own_pki: Pki
) -> None:
    pki = own_pki
    settings = settings_for(tmp_path, **tls(pki, mutual=False))
    async with running_server(settings, pki.credentials(client=None)) as (app, _):
        mismatched = pki.ca.server()
        pki.server_key.write_bytes(pki.ca.server().key_pem)  # not the certificate's key
        pki.server_cert.write_bytes(mismatched.cert_pem)
        assert await asyncio.to_thread(served_serial, app.port, pki) == pki.server.serial
        async with grpc.aio.secure_channel(
            f"127.0.0.1:{app.port}", pki.credentials(client=None)
        ) as fresh:
            assert await check_health(fresh) == health_pb2.HealthCheckResponse.SERVING
        pki.server_key.write_bytes(mismatched.key_pem)  # now the pair matches
        assert await asyncio.to_thread(served_serial, app.port, pki) == mismatched.serial


async def test_sighup_rereads_the_files(tmp_path: Path, own_pki: Pki) -> None:
    """`reload()` (what SIGHUP calls) picks up files whose change the stat check misses."""
    pki = own_pki
    settings = settings_for(tmp_path, **tls(pki, mutual=False))
    async with running_server(settings, pki.credentials(client=None)) as (app, _):
        before = os.stat(pki.server_cert), os.stat(pki.server_key)
        renewed = pki.ca.server()
        while len(renewed.cert_pem) != len(pki.server.cert_pem) or len(renewed.key_pem) != len(
            pki.server.key_pem
        ):
            renewed = pki.ca.server()
        pki.server_cert.write_bytes(renewed.cert_pem)  # in place: same inode and size
        pki.server_key.write_bytes(renewed.key_pem)
        for path, stat in zip((pki.server_cert, pki.server_key), before, strict=True):
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert await asyncio.to_thread(served_serial, app.port, pki) == pki.server.serial
        reload = app.reload_certificates()
        assert reload is not None
        assert await reload
        assert await asyncio.to_thread(served_serial, app.port, pki) == renewed.serial


async def test_unusable_certificate_files_stop_the_start_with_the_file_named(
    tmp_path: Path, pki: Pki
) -> None:
    other_key = tmp_path / "other.key"
    other_key.write_bytes(pki.ca.server().key_pem)
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    for overrides, message in [
        ({"tls_key_file": other_key}, "other.key is not the key of the first certificate"),
        ({"tls_cert_file": tmp_path / "missing.crt"}, "cannot read .*missing.crt"),
        ({"tls_cert_file": not_pem}, "not.pem holds no PEM certificate"),
        ({"tls_key_file": not_pem}, "not.pem holds no unencrypted PEM private key"),
        ({"tls_client_ca_file": not_pem}, "not.pem holds no PEM certificate"),
    ]:
        settings = settings_for(tmp_path, **{**tls(pki, mutual=True), **overrides})
        app = await build_server(settings)
        try:
            with pytest.raises(TlsConfigurationError, match=message):
                await app.start()
        finally:
            await app.stop(grace=0)


async def test_the_http_listener_speaks_tls_with_the_same_files_and_reloads(
    tmp_path: Path, own_pki: Pki
) -> None:
    pki = own_pki
    settings = settings_for(tmp_path, **tls(pki, mutual=True), http_address="127.0.0.1:0")
    async with running_server(settings, pki.credentials()) as (app, _):
        port = app.http_port
        trusting = ssl.create_default_context(cafile=pki.ca_file)
        trusting.load_cert_chain(pki.client_cert, pki.client_key)
        async with httpx.AsyncClient(verify=trusting) as client:
            answer = await client.get(f"https://localhost:{port}/readyz")
        assert answer.json() == {"status": "ready"}
        anonymous = ssl.create_default_context(cafile=pki.ca_file)  # no client certificate
        with pytest.raises(httpx.HTTPError):
            async with httpx.AsyncClient(verify=anonymous) as client:
                await client.get(f"https://localhost:{port}/readyz")
        assert await asyncio.to_thread(served_serial, port, pki) == pki.server.serial
        renewed = pki.ca.server()
        pki.replace_server_certificate(renewed)
        reload = app.reload_certificates()
        assert reload is not None
        assert await reload
        assert await asyncio.to_thread(served_serial, port, pki) == renewed.serial
