"""TLS channel credentials from PEM files, for Keyhold and the services behind it."""

from __future__ import annotations

from pathlib import Path

import grpc


def _read(path: Path | str | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()


def tls_channel_credentials(
    root_certificates_file: Path | str | None = None,
    certificate_chain_file: Path | str | None = None,
    private_key_file: Path | str | None = None,
) -> grpc.ChannelCredentials:
    """Credentials for `keyhold_channel(..., channel_credentials=...)`.

    `root_certificates_file`: the CA(s) that issued the server's certificate (default:
    gRPC's bundled public roots). `certificate_chain_file` and `private_key_file`: the
    client certificate for a server that requires one (mutual TLS); both or neither.
    Raises OSError if a file cannot be read.
    """
    if (certificate_chain_file is None) != (private_key_file is None):
        raise ValueError("certificate_chain_file and private_key_file go together")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(root_certificates_file),
        private_key=_read(private_key_file),
        certificate_chain=_read(certificate_chain_file),
    )
