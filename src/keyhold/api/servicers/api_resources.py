"""keyhold.identity.v1.ApiResourceService."""

from __future__ import annotations

from keyhold.identity.v1 import api_resource_service_pb2_grpc as pb_grpc


class ApiResourceServicer(pb_grpc.ApiResourceServiceServicer):
    pass
