"""The server's TLS: credentials from PEM files, reread without a restart.

gRPC asks `ReloadingCertificates._fetch` for a new configuration at every TLS handshake
(on one of its own threads, not the event loop). It answers None, "keep the current
one", unless the files changed since they were last read (modification time, size or
inode: an atomic rename and a Kubernetes secret update both count) or `reload()` (the
SIGHUP handler) prepared one. A set of files that does not load (half-written, key
and certificate not matching) is logged and the current certificate stays in use.
"""

from __future__ import annotations

import ipaddress
import os
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import grpc
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization

log = structlog.get_logger(__name__)

_Signature = tuple[tuple[int, int, int, int] | None, ...]


class TlsConfigurationError(RuntimeError):
    """The server cannot serve securely as configured; the message says what to fix."""


def is_loopback(listen_address: str) -> bool:
    """True for `127.x.x.x:port`, `[::1]:port` and `localhost:port`."""
    host = listen_address.rpartition(":")[0].strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class CertificateFiles:
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.cert_file, self.key_file, *filter(None, (self.client_ca_file,)))


@dataclass(frozen=True, slots=True)
class ServerCertificate:
    """A validated certificate chain, its key and the client CA bundle, as PEM."""

    chain_pem: bytes
    key_pem: bytes
    client_ca_pem: bytes | None
    serial_number: int
    subject: str
    not_after: datetime

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(self.key_pem, self.chain_pem)], root_certificates=self.client_ca_pem
        )


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsConfigurationError(f"cannot read {path}: {exc.strerror}") from exc


def _certificates(path: Path, pem: bytes) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise TlsConfigurationError(f"{path} holds no PEM certificate") from exc
    return certificates


def load_certificate(files: CertificateFiles) -> ServerCertificate:
    """Read and check the files: raises TlsConfigurationError naming the file at fault."""
    chain_pem = _read(files.cert_file)
    leaf = _certificates(files.cert_file, chain_pem)[0]
    key_pem = _read(files.key_file)
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:  # TypeError: the key is encrypted
        raise TlsConfigurationError(
            f"{files.key_file} holds no unencrypted PEM private key"
        ) from exc
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        raise TlsConfigurationError(
            f"{files.key_file} is not the key of the first certificate in {files.cert_file}"
        )
    client_ca_pem = None
    if files.client_ca_file is not None:
        client_ca_pem = _read(files.client_ca_file)
        _certificates(files.client_ca_file, client_ca_pem)
    return ServerCertificate(
        chain_pem,
        key_pem,
        client_ca_pem,
        leaf.serial_number,
        leaf.subject.rfc4514_string(),
        leaf.not_valid_after_utc,
    )


def _signature(paths: tuple[Path, ...]) -> _Signature:
    def one(path: Path) -> tuple[int, int, int, int] | None:
        try:
            status = os.stat(path)
        except OSError:
            return None
        return status.st_mtime_ns, status.st_size, status.st_ino, status.st_dev

    return tuple(one(path) for path in paths)


class ReloadingCertificates:
    """Server credentials whose certificate, key and client CA follow the files."""

    def __init__(self, files: CertificateFiles) -> None:
        self._files = files
        self._lock = threading.Lock()
        self._seen = _signature(files.paths)
        self.current = load_certificate(files)
        self._pending: ServerCertificate | None = None

    @property
    def requires_client_certificate(self) -> bool:
        return self._files.client_ca_file is not None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self.current.configuration(),
            self._fetch,  # type: ignore[arg-type]  # the stub omits gRPC's documented None
            require_client_authentication=self.requires_client_certificate,
        )

    def reload(self) -> bool:
        """Read the files now (blocking); the next handshake uses them if they load."""
        with self._lock:
            loaded = self._load(_signature(self._files.paths))
            if loaded is not None:
                self._pending = loaded
            return loaded is not None

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            fresh, self._pending = self._pending, None
            if fresh is None:
                signature = _signature(self._files.paths)
                if signature == self._seen:
                    return None
                fresh = self._load(signature)
            return None if fresh is None else fresh.configuration()

    def _load(self, signature: _Signature) -> ServerCertificate | None:
        # Remembered even on failure: a broken set is retried when the files change
        # again or on SIGHUP, not at every handshake.
        self._seen = signature
        try:
            loaded = load_certificate(self._files)
        except TlsConfigurationError as error:
            log.error("tls_reload_failed", error=str(error), serial=hex(self.current.serial_number))
            return None
        self.current = loaded
        log.info(
            "tls_certificate_loaded",
            serial=hex(loaded.serial_number),
            subject=loaded.subject,
            not_after=loaded.not_after.isoformat(),
        )
        return loaded
