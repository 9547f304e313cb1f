"""Whether and how the server encrypts its connections: TLS from files that can be
reloaded, or plaintext only where nothing else can listen in."""

from __future__ import annotations

from keyhold.api.tls import (
    CertificateFiles,
    ReloadingCertificates,
    TlsConfigurationError,
    is_loopback,
)
from keyhold.settings import Settings


def certificates_for(settings: Settings) -> ReloadingCertificates | None:
    """None: plaintext, which `check_plaintext_allowed` has allowed."""
    cert, key = settings.tls_cert_file, settings.tls_key_file
    if cert is None or key is None:
        check_plaintext_allowed(settings)
        return None
    return ReloadingCertificates(CertificateFiles(cert, key, settings.tls_client_ca_file))


def check_transport(settings: Settings) -> None:
    """Raise TlsConfigurationError now if the server's start would (for a supervisor,
    before it forks workers that would each fail)."""
    certificates_for(settings)


def check_plaintext_allowed(settings: Settings) -> None:
    """Without TLS, serve only on loopback unless `allow_plaintext` says otherwise."""
    if settings.tls_cert_file is not None or settings.allow_plaintext:
        return
    listening = (settings.listen_address, settings.http_address)
    exposed = [address for address in listening if address and not is_loopback(address)]
    if not exposed:
        return
    raise TlsConfigurationError(
        f"refusing to serve plaintext on {exposed[0]}: set KEYHOLD_TLS_CERT_FILE "
        "and KEYHOLD_TLS_KEY_FILE, listen on a loopback address, or set "
        "KEYHOLD_ALLOW_PLAINTEXT=true if something in front of Keyhold encrypts the traffic"
    )
