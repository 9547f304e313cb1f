"""A throwaway certificate authority for TLS tests, made with `cryptography`."""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from keyhold.client import tls_channel_credentials


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, PEM-encoded."""

    certificate: x509.Certificate
    key_pem: bytes

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def serial(self) -> int:
        return self.certificate.serial_number

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """`stem.crt` and `stem.key` in `directory`: (certificate path, key path)."""
        cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert_path.write_bytes(self.cert_pem)
        key_path.write_bytes(self.key_pem)
        return cert_path, key_path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class CertificateAuthority:
    def __init__(self, name: str) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.now(UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(self._name)
            .issuer_name(self._name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def write(self, directory: Path, stem: str) -> Path:
        path = directory / f"{stem}.crt"
        path.write_bytes(self.cert_pem)
        return path

    def server(self, *dns_names: str, ips: tuple[str, ...] = ("127.0.0.1",)) -> Issued:
        """A server certificate for `localhost` (and `dns_names`) and `ips`."""
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in ("localhost", *dns_names)]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        return self._issue("localhost", names, ExtendedKeyUsageOID.SERVER_AUTH)

    def client(self, common_name: str, uri: str | None = None) -> Issued:
        """A client certificate with `common_name` (and a URI SAN, SPIFFE style)."""
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)] if uri else []
        return self._issue(common_name, names, ExtendedKeyUsageOID.CLIENT_AUTH)

    def _issue(
        self, common_name: str, names: list[x509.GeneralName], usage: x509.ObjectIdentifier
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return Issued(builder.sign(self._key, hashes.SHA256()), _key_pem(key))


@dataclass
class Pki:
    """A CA with a server and a client certificate, and an unrelated CA's client."""

    directory: Path
    ca: CertificateAuthority
    ca_file: Path
    server_cert: Path
    server_key: Path
    server: Issued
    client_cert: Path
    client_key: Path

    def credentials(
        self, client: Literal["client", "stranger"] | None = "client"
    ) -> grpc.ChannelCredentials:
        """Trusting the CA; presenting its client certificate, the unrelated CA's, or none."""
        if client is None:
            return tls_channel_credentials(self.ca_file)
        return tls_channel_credentials(
            self.ca_file, self.directory / f"{client}.crt", self.directory / f"{client}.key"
        )

    def replace_server_certificate(self, issued: Issued) -> None:
        """Swap both files by atomic renames, as a certificate manager does."""
        for suffix, pem in (("key", issued.key_pem), ("crt", issued.cert_pem)):
            staged = self.directory / f"server.{suffix}.new"
            staged.write_bytes(pem)
            os.replace(staged, self.directory / f"server.{suffix}")


def make_pki(directory: Path) -> Pki:
    """A fresh CA's files in `directory`: ca.crt, server.crt/.key (localhost and 127.0.0.1),
    client.crt/.key, and stranger.crt/.key from an unrelated CA."""
    ca = CertificateAuthority("Keyhold Test CA")
    server = ca.server()
    server_cert, server_key = server.write(directory, "server")
    client_cert, client_key = ca.client(
        "billing-service", uri="spiffe://example.test/ns/prod/sa/billing"
    ).write(directory, "client")
    CertificateAuthority("Somebody Else's CA").client("billing-service").write(
        directory, "stranger"
    )
    return Pki(
        directory,
        ca,
        ca.write(directory, "ca"),
        server_cert,
        server_key,
        server,
        client_cert,
        client_key,
    )


def served_serial(port: int, pki: Pki) -> int:
    """Serial number of the certificate a new TLS connection to `port` is shown."""
    context = ssl.create_default_context(cafile=pki.ca_file)
    context.load_cert_chain(pki.client_cert, pki.client_key)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as secured,
    ):
        der = secured.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number
