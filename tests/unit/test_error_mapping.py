"""Domain errors map to status codes with ErrorInfo, BadRequest and RetryInfo details."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2

from keyhold.api.errors import status_code_of, status_for
from keyhold.domain import errors


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidArgument("R", "m"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.Unauthenticated("R", "m"), grpc.StatusCode.UNAUTHENTICATED),
        (errors.PermissionDenied("R", "m"), grpc.StatusCode.PERMISSION_DENIED),
        (errors.NotFound("R", "m"), grpc.StatusCode.NOT_FOUND),
        (errors.AlreadyExists("R", "m"), grpc.StatusCode.ALREADY_EXISTS),
        (errors.FailedPrecondition("R", "m"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.ResourceExhausted("R", "m", 3), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.Unavailable("R", "m"), grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_each_error_has_its_code(error: errors.DomainError, code: grpc.StatusCode) -> None:
    assert status_code_of(error) is code
    status, _ = status_for(error)
    assert status.code == code.value[0]
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert (info.reason, info.domain) == ("R", "keyhold")


def test_invalid_argument_carries_field_violations() -> None:
    error = errors.InvalidArgument(
        "PASSWORD_TOO_SHORT",
        "bad",
        [errors.FieldViolation("password", "at least 12 characters")],
        domain="keyhold.identity",
    )
    status, extra = status_for(error)
    bad = error_details_pb2.BadRequest()
    assert status.details[1].Unpack(bad)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("password", "at least 12 characters")
    ]
    assert extra == []


def test_resource_exhausted_carries_retry_info_and_retry_after() -> None:
    status, extra = status_for(errors.ResourceExhausted("LOCKED_OUT", "wait", 90.5))
    retry = error_details_pb2.RetryInfo()
    assert status.details[1].Unpack(retry)
    assert retry.retry_delay.seconds == 90
    assert retry.retry_delay.nanos == 500_000_000
    assert extra == [("retry-after", "91")]
