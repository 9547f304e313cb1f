"""The socket transport of gRPC's core in a `keyhold serve` process.

gRPC reads `GRPC_EXPERIMENTS` once, when it is first imported, so `keyhold serve` makes
the choice before anything imports grpc. `posix` turns off two experiments of grpcio
1.85, the EventEngine listener and endpoints: accepted connections are then read and
written by the thread that polls the completion queue, not handed to EventEngine's own
threads and back (docs/benchmarks.md has the measurements). `event-engine` leaves
gRPC's default.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, MutableMapping
from typing import Literal

GrpcTransport = Literal["posix", "event-engine"]
DEFAULT_TRANSPORT: GrpcTransport = "posix"
VARIABLE = "GRPC_EXPERIMENTS"

EXPERIMENTS: Mapping[str, str] = {
    "posix": "-event_engine_listener,-event_engine_for_all_other_endpoints",
    "event-engine": "",
}


def select_transport(
    transport: GrpcTransport,
    environ: MutableMapping[str, str] = os.environ,
    loaded: Mapping[str, object] = sys.modules,
) -> str:
    """Ask gRPC for `transport` and return the experiments in effect. An operator's own
    `GRPC_EXPERIMENTS` is kept as it is; once grpc is loaded nothing can change."""
    if "grpc" not in loaded and VARIABLE not in environ and EXPERIMENTS[transport]:
        environ[VARIABLE] = EXPERIMENTS[transport]
    return experiments_in_effect(environ)


def experiments_in_effect(environ: Mapping[str, str] = os.environ) -> str:
    return environ.get(VARIABLE, "")
