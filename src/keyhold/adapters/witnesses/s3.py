"""S3-compatible object storage as a witness: each signed checkpoint an object of its
own under a prefix, created only if absent (a conditional write, `If-None-Match: *`, so
no checkpoint is ever replaced through Keyhold), optionally under Object Lock retention
in compliance mode, so that nobody, Keyhold's own credentials included, can delete or
overwrite it before the retention ends. The object names are the directory witness's:
they list in chain order. boto3 is synchronous: every call runs off the event loop."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from keyhold.adapters.witnesses.directory import DirectoryWitness, WitnessConflict

_ALREADY_THERE = {"PreconditionFailed", "412", "ConditionalRequestConflict"}


class S3Witness:
    def __init__(
        self, client: Any, bucket: str, prefix: str = "", *, retention_days: int = 0
    ) -> None:
        """`client`: a boto3 S3 client; `retention_days` > 0: each object is locked
        (the bucket must have Object Lock enabled)."""
        self._client = client
        self._bucket = bucket
        self._prefix = prefix
        self._retention = timedelta(days=retention_days) if retention_days > 0 else None

    async def export(self, sequence: int, digest: bytes, signed: str) -> str:
        """Writes `signed` once under its name; the same checkpoint again is a no-op,
        another under that name a WitnessConflict. Returns the object key."""
        key = self._prefix + DirectoryWitness.file_name(sequence, digest)
        await asyncio.to_thread(self._put, key, signed.encode("ascii"))
        return key

    def _put(self, key: str, body: bytes) -> None:
        request: dict[str, Any] = {
            "Bucket": self._bucket,
            "Key": key,
            "Body": body,
            "ContentType": "application/jose",
            "IfNoneMatch": "*",
        }
        if self._retention is not None:
            request["ObjectLockMode"] = "COMPLIANCE"
            request["ObjectLockRetainUntilDate"] = datetime.now(UTC) + self._retention
        try:
            self._client.put_object(**request)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in _ALREADY_THERE:
                raise
            if self._get(key) != body:
                raise WitnessConflict(
                    f"s3://{self._bucket}/{key} holds another checkpoint"
                ) from None

    def _get(self, key: str) -> bytes:
        answer = self._client.get_object(Bucket=self._bucket, Key=key)
        body: bytes = answer["Body"].read()
        return body

    async def checkpoints(self) -> list[tuple[str, str]]:
        """(object name, signed checkpoint) of every checkpoint object, in name order."""
        return await asyncio.to_thread(self._read)

    def _read(self) -> list[tuple[str, str]]:
        keys: list[str] = []
        for page in self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self._bucket, Prefix=self._prefix
        ):
            keys.extend(item["Key"] for item in page.get("Contents", ()))
        return [
            (key.removeprefix(self._prefix), self._get(key).decode("ascii")) for key in sorted(keys)
        ]
