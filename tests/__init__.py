"""Keyhold's tests. Imported before any test module or conftest imports grpc: the servers
the tests start run gRPC's transport as `keyhold serve` does (`KEYHOLD_GRPC_TRANSPORT`'s
default), unless `GRPC_EXPERIMENTS` is set for the run."""

from keyhold.grpc_transport import DEFAULT_TRANSPORT, select_transport

select_transport(DEFAULT_TRANSPORT)
