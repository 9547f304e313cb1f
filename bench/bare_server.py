"""The baseline server: grpc.aio with no interceptors and one raw-bytes unary method.

    python -m bench.bare_server --address 127.0.0.1:50099 [--event-loop asyncio|uvloop]

`/bench.Bare/Echo` returns its request unchanged; no protobuf is parsed. It is what a
Keyhold RPC costs with none of Keyhold in it: the floor of gRPC Python on this machine.
It runs on the standard library's asyncio loop, as grpc.aio does unless told otherwise;
`--event-loop uvloop` runs it on the loop `keyhold serve` uses.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import signal
import sys

import grpc

from keyhold.event_loop import run


async def echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


async def echo_with_context(
    request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
) -> bytes:
    """What any policy pipeline must ask of gRPC per call, with no Keyhold code: read
    the metadata, the peer and its auth context, echo a request id in the trailers."""
    for _key, _value in context.invocation_metadata() or ():
        pass
    context.peer()
    context.auth_context()
    context.set_trailing_metadata((("x-request-id", secrets.token_hex(16)),))
    return request


def build(address: str) -> grpc.aio.Server:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "bench.Bare",
                {
                    "Echo": grpc.unary_unary_rpc_method_handler(echo),
                    "EchoWithContext": grpc.unary_unary_rpc_method_handler(echo_with_context),
                },
            ),
        )
    )
    if server.add_insecure_port(address) == 0:
        raise OSError(f"cannot listen on {address}")
    return server


async def serve(address: str) -> None:
    server = build(address)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(0.5)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_server")
    parser.add_argument("--address", default="127.0.0.1:50099", help="host:port")
    parser.add_argument("--event-loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args(argv)
    run(serve(args.address), args.event_loop)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
