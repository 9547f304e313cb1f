"""Reading rich error details (google.rpc.Status) off a failed call."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2, status_pb2

DETAILS_KEY = "grpc-status-details-bin"


@dataclass
class RichError:
    code: grpc.StatusCode
    message: str
    error_info: error_details_pb2.ErrorInfo | None
    bad_request: error_details_pb2.BadRequest | None
    retry_info: error_details_pb2.RetryInfo | None
    trailing: dict[str, str | bytes]

    @property
    def reason(self) -> str | None:
        return self.error_info.reason if self.error_info else None


def rich_error(error: grpc.aio.AioRpcError) -> RichError:
    trailing = {key: value for key, value in (error.trailing_metadata() or ())}
    info = bad = retry = None
    raw = trailing.get(DETAILS_KEY)
    if isinstance(raw, bytes):
        status = status_pb2.Status.FromString(raw)
        assert status.code == error.code().value[0]
        assert status.message == error.details()
        for detail in status.details:
            for kind in (
                error_details_pb2.ErrorInfo,
                error_details_pb2.BadRequest,
                error_details_pb2.RetryInfo,
            ):
                if detail.Is(kind.DESCRIPTOR):
                    value = kind()
                    detail.Unpack(value)
                    if isinstance(value, error_details_pb2.ErrorInfo):
                        info = value
                    elif isinstance(value, error_details_pb2.BadRequest):
                        bad = value
                    else:
                        retry = value
    return RichError(error.code(), error.details() or "", info, bad, retry, trailing)
