"""The S3 witness against a real S3-compatible server (moto in server mode, on loopback,
started by the test): checkpoints are written once and never replaced, listed in chain
order, and locked under Object Lock retention when asked."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

from keyhold.adapters.witnesses.directory import WitnessConflict
from keyhold.adapters.witnesses.s3 import S3Witness
from tests.support.cli import free_port


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        yield boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
    finally:
        server.stop()


async def test_checkpoints_are_written_once_and_listed_in_order(s3: Any) -> None:
    s3.create_bucket(Bucket="anchors")
    witness = S3Witness(s3, "anchors", "prod/")
    await witness.export(20, b"\x02" * 32, "b.b.b")
    await witness.export(10, b"\x01" * 32, "a.a.a")
    await witness.export(10, b"\x01" * 32, "a.a.a")  # the same again: no-op
    listed = await witness.checkpoints()
    assert [signed for _, signed in listed] == ["a.a.a", "b.b.b"]
    assert listed[0][0].startswith("00000000000000000010-")
    with pytest.raises(WitnessConflict):
        await witness.export(10, b"\x01" * 32, "forged.forged.forged")
    assert [signed for _, signed in await witness.checkpoints()] == ["a.a.a", "b.b.b"]


async def test_checkpoints_under_object_lock_cannot_be_deleted(s3: Any) -> None:
    s3.create_bucket(Bucket="locked", ObjectLockEnabledForBucket=True)
    witness = S3Witness(s3, "locked", retention_days=30)
    key = await witness.export(10, b"\x01" * 32, "a.a.a")
    version = s3.head_object(Bucket="locked", Key=key)
    assert version["ObjectLockMode"] == "COMPLIANCE"
    with pytest.raises(ClientError):
        s3.delete_object(Bucket="locked", Key=key, VersionId=version["VersionId"])
