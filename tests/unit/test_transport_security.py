"""Transport security settings and rules, without a server: loopback detection, the
connection facts the pipeline reads, the mTLS requirement, paired settings."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import ValidationError

from keyhold.api.pipeline.authentication import transport_identity
from keyhold.api.pipeline.authorization import Authorizer
from keyhold.api.policy import load_policies
from keyhold.api.tls import is_loopback
from keyhold.client import tls_channel_credentials
from keyhold.domain.call import TransportIdentity
from keyhold.domain.errors import Unauthenticated
from keyhold.domain.principal import ANONYMOUS
from keyhold.settings import Settings
from keyhold.wiring.grpc_api import SERVICES
from tests.support.servers import settings_for


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("127.3.2.1:1", True),
        ("[::1]:50051", True),
        ("localhost:50051", True),
        ("LOCALHOST:1", True),
        ("0.0.0.0:50051", False),
        ("[::]:50051", False),
        ("10.1.2.3:50051", False),
        ("[2001:db8::1]:1", False),
        ("keyhold.internal:50051", False),
        ("localhost.example.com:1", False),
    ],
)
def test_loopback_addresses(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def test_transport_identity_of_a_mutual_tls_connection() -> None:
    seen = transport_identity(
        {
            "transport_security_type": [b"ssl"],
            "x509_common_name": [b"billing-service"],
            "x509_subject_alternative_name": [b"spiffe://example.test/billing", b"billing.svc"],
            "x509_pem_cert": [b"-----BEGIN CERTIFICATE-----..."],
            "security_level": [b"TSI_PRIVACY_AND_INTEGRITY"],
        }
    )
    assert seen == TransportIdentity(
        "ssl", True, "billing-service", ("spiffe://example.test/billing", "billing.svc")
    )
    assert seen.is_mutual_tls


@pytest.mark.parametrize(
    "auth_context",
    [
        {"transport_security_type": [b"insecure"], "security_level": [b"TSI_SECURITY_NONE"]},
        {"transport_security_type": [b"ssl"], "security_level": [b"TSI_PRIVACY_AND_INTEGRITY"]},
        {"transport_security_type": [b"local"], "x509_pem_cert": [b"not over TLS"]},
        {},
    ],
)
def test_no_mutual_tls_without_a_verified_client_certificate(
    auth_context: dict[str, list[bytes]],
) -> None:
    assert not transport_identity(auth_context).is_mutual_tls


def test_require_mtls_closes_even_a_public_method() -> None:
    policies = load_policies(SERVICES)
    public = next(p for p in policies.values() if p.full_method.endswith("/GetJwks"))
    assert public.public
    assert not public.require_mtls
    mutual = TransportIdentity("ssl", True, "billing-service")
    Authorizer().check(public, ANONYMOUS, TransportIdentity("insecure"))
    guarded = replace(public, require_mtls=True)
    Authorizer().check(guarded, ANONYMOUS, mutual)
    for transport in (TransportIdentity("insecure"), TransportIdentity("ssl")):
        with pytest.raises(Unauthenticated) as caught:
            Authorizer().check(guarded, ANONYMOUS, transport)
        assert caught.value.reason == "MTLS_REQUIRED"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tls_cert_file": Path("a.crt")}, "tls_cert_file and tls_key_file go together"),
        ({"tls_key_file": Path("a.key")}, "tls_cert_file and tls_key_file go together"),
        ({"tls_client_ca_file": Path("ca.crt")}, "tls_client_ca_file needs tls_cert_file"),
        (
            {"tls_health_client_cert_file": Path("c.crt")},
            "tls_health_client_cert_file and tls_health_client_key_file go together",
        ),
    ],
)
def test_tls_settings_come_in_pairs(
    tmp_path: Path, overrides: dict[str, Path], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        settings_for(tmp_path, **overrides)


def test_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "KEYHOLD_TLS_CERT_FILE": "/etc/keyhold/tls.crt",
        "KEYHOLD_TLS_KEY_FILE": "/etc/keyhold/tls.key",
        "KEYHOLD_TLS_CLIENT_CA_FILE": "/etc/keyhold/clients.crt",
        "KEYHOLD_ALLOW_PLAINTEXT": "true",
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.tls_cert_file == Path("/etc/keyhold/tls.crt")
    assert settings.tls_key_file == Path("/etc/keyhold/tls.key")
    assert settings.tls_client_ca_file == Path("/etc/keyhold/clients.crt")
    assert settings.allow_plaintext


def test_plaintext_is_not_allowed_by_default(tmp_path: Path) -> None:
    assert not settings_for(tmp_path).allow_plaintext


def test_client_certificate_and_key_go_together(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="go together"):
        tls_channel_credentials(None, tmp_path / "client.crt")
