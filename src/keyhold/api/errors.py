"""The one place where domain errors become gRPC statuses with rich details (AIP-193)."""

from __future__ import annotations

import math

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from keyhold.domain import errors

_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
DETAILS_KEY = "grpc-status-details-bin"


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def status_code_of(error: errors.DomainError) -> grpc.StatusCode:
    return _CODE_BY_NUMBER[error.code]


def grpc_code(number: int) -> grpc.StatusCode:
    return _CODE_BY_NUMBER[number]


def rich_status(
    code: grpc.StatusCode,
    message: str,
    reason: str,
    domain: str,
    metadata: dict[str, str] | None = None,
) -> status_pb2.Status:
    info = error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=metadata or {})
    return status_pb2.Status(code=code.value[0], message=message, details=[_pack(info)])


def status_for(error: errors.DomainError) -> tuple[status_pb2.Status, list[tuple[str, str]]]:
    """The rich status for a domain error, plus extra trailing metadata (retry-after)."""
    status = rich_status(
        status_code_of(error), error.message, error.reason, error.domain, error.metadata
    )
    extra: list[tuple[str, str]] = []
    if isinstance(error, errors.InvalidArgument) and error.violations:
        violations = [
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in error.violations
        ]
        status.details.append(_pack(error_details_pb2.BadRequest(field_violations=violations)))
    if isinstance(error, errors.ResourceExhausted):
        delay = max(error.retry_after_seconds, 0.0)
        seconds = int(delay)
        retry = error_details_pb2.RetryInfo(
            retry_delay=duration_pb2.Duration(seconds=seconds, nanos=int((delay - seconds) * 1e9))
        )
        status.details.append(_pack(retry))
        extra.append(("retry-after", str(max(1, math.ceil(delay)))))
    return status, extra


def internal_status(request_id: str) -> status_pb2.Status:
    return rich_status(
        grpc.StatusCode.INTERNAL,
        f"internal error; quote request id {request_id} when reporting it",
        "INTERNAL",
        "keyhold",
    )


def unimplemented_status(method: str) -> status_pb2.Status:
    return rich_status(
        grpc.StatusCode.UNIMPLEMENTED,
        f"{method} is not implemented yet",
        "NOT_IMPLEMENTED",
        "keyhold",
    )


def trailing_metadata(
    status: status_pb2.Status, extra: list[tuple[str, str]], request_id: str
) -> tuple[tuple[str, str | bytes], ...]:
    assert status.code != code_pb2.OK
    return ((DETAILS_KEY, status.SerializeToString()), ("x-request-id", request_id), *extra)
