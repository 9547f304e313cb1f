"""keyhold.audit.v1.AuditService: not built yet; every method answers UNIMPLEMENTED."""

from __future__ import annotations

from keyhold.audit.v1 import audit_service_pb2_grpc as pb_grpc


class AuditServicer(pb_grpc.AuditServiceServicer):
    pass
