"""keyhold.provider.v1.ProviderService: not built yet; every method answers UNIMPLEMENTED."""

from __future__ import annotations

from keyhold.provider.v1 import provider_service_pb2_grpc as pb_grpc


class ProviderServicer(pb_grpc.ProviderServiceServicer):
    pass
