"""Generated request ids: unique in a process, and a forked worker has its own prefix."""

from __future__ import annotations

import os

from keyhold.api.pipeline.request_id import request_id_from


def test_a_well_formed_header_is_kept_and_a_bad_one_replaced() -> None:
    assert request_id_from("abc-123") == "abc-123"
    assert request_id_from("has space") != "has space"
    assert request_id_from("x" * 129) != "x" * 129


def test_generated_ids_are_unique() -> None:
    ids = {request_id_from(None) for _ in range(10_000)}
    assert len(ids) == 10_000


def test_a_forked_child_does_not_repeat_the_parents_ids() -> None:
    parent_prefix = request_id_from(None).rsplit("-", 1)[0]
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reports its first id and leaves at once
        os.write(writer, request_id_from(None).encode())
        os._exit(0)
    os.close(writer)
    child_id = os.read(reader, 200).decode()
    os.close(reader)
    os.waitpid(pid, 0)
    assert child_id.rsplit("-", 1)[0] != parent_prefix
