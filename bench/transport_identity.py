"""What transport security adds to a call and to a handshake, measured in-process.

    python -m bench transport-identity [--repeat 20000]

Per call, the policy pipeline reads the connection's auth context and turns it into
the call's `TransportIdentity`; this times that step inside a real grpc.aio handler
over plaintext, TLS and mutual TLS connections (a throwaway CA). Per TLS handshake,
gRPC asks the certificate fetcher whether the files changed; this times that check
with the files unchanged (three `stat` calls). CPU time of this process.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from keyhold.api.pipeline.authentication import transport_identity
from keyhold.api.tls import CertificateFiles, ReloadingCertificates
from tests.support.pki import make_pki

_METHOD = "/bench.Transport/Measure"


def _per_call_us(context: Any, repeat: int) -> float:
    start = time.process_time()
    for _ in range(repeat):
        transport_identity(context.auth_context())
    return (time.process_time() - start) / repeat * 1e6


async def run(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench transport-identity")
    parser.add_argument("--repeat", type=int, default=20_000)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as directory:
        pki = make_pki(Path(directory))
        mutual = ReloadingCertificates(
            CertificateFiles(pki.server_cert, pki.server_key, pki.ca_file)
        )
        start = time.process_time()
        for _ in range(args.repeat):
            mutual._fetch()
        results["fetcher_per_handshake_us"] = (time.process_time() - start) / args.repeat * 1e6

        async def measure(request: bytes, context: aio.ServicerContext[bytes, bytes]) -> bytes:
            return f"{_per_call_us(context, args.repeat):.2f}".encode()

        ports: dict[str, tuple[int, grpc.ChannelCredentials | None]] = {}
        server = aio.server()
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "bench.Transport", {"Measure": grpc.unary_unary_rpc_method_handler(measure)}
                ),
            )
        )
        ports["plaintext"] = (server.add_insecure_port("127.0.0.1:0"), None)
        one_way = ReloadingCertificates(CertificateFiles(pki.server_cert, pki.server_key))
        ports["tls"] = (
            server.add_secure_port("127.0.0.1:0", one_way.credentials()),
            pki.credentials(client=None),
        )
        ports["mutual_tls"] = (
            server.add_secure_port("127.0.0.1:0", mutual.credentials()),
            pki.credentials(),
        )
        await server.start()
        try:
            for name, (port, credentials) in ports.items():
                target = f"127.0.0.1:{port}"
                channel = (
                    aio.insecure_channel(target)
                    if credentials is None
                    else aio.secure_channel(target, credentials)
                )
                async with channel:
                    measure_call: aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                        _METHOD
                    )
                    answer = await measure_call(b"", timeout=120)
                results[f"per_call_us_{name}"] = float(answer.decode())
        finally:
            await server.stop(0)
    for key, value in results.items():
        print(f"{key:32} {value:8.2f}")
    return results


if __name__ == "__main__":
    asyncio.run(run([]))
