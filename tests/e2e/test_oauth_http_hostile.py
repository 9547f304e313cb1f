"""Hostile requests to every HTTP endpoint get an RFC error or a refusal, never a 500:
forms of any parameters and values (including the parameter names each grant reads),
bodies that are no form, any content type, bad `authorization` headers. Nothing a
refused request sends is written."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from keyhold.adapters.persistence import tables
from keyhold.server import KeyholdServer
from tests.support.servers import running_server, settings_for

pytestmark = pytest.mark.slow

ENDPOINTS = ("/oauth2/token", "/oauth2/introspect", "/oauth2/revoke")
PARAMETERS = (
    "grant_type",
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
    "scope",
    "audience",
    "resource",
    "refresh_token",
    "subject_token",
    "subject_token_type",
    "requested_token_type",
    "token",
    "token_type_hint",
)
VALUES = st.one_of(
    st.sampled_from(
        (
            "",
            "client_credentials",
            "refresh_token",
            "urn:ietf:params:oauth:grant-type:token-exchange",
            "urn:ietf:params:oauth:token-type:access_token",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "eyJhbGciOiJub25lIn0.e30.",
            "a.b.c",
            "khc_x",
            "khs_x",
            "khr_x",
            "\x00",
            "%",
            "é" * 300,
            "x" * 20_000,
            "W1tb" * 3000 + ".e30.AA",
        )
    ),
    st.text(max_size=64),
)
FORMS = st.dictionaries(st.sampled_from(PARAMETERS) | st.text(max_size=8), VALUES, max_size=8)
AUTHORIZATION = st.one_of(
    st.none(),
    st.sampled_from(
        (
            "Basic",
            "Basic !!!",
            "Basic " + "A" * 9000,
            "Basic a2hjX3g6",  # khc_x:
            "Basic Og==",  # ":"
            "Bearer",
            "Bearer x",
            "Negotiate abc",
        )
    ),
    st.text(max_size=40).filter(lambda value: value.isascii() and value.isprintable()),
)
CONTENT_TYPES = st.sampled_from(
    (
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=utf-8",
        "application/json",
        "text/plain",
        "multipart/form-data; boundary=x",
        "",
    )
)
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass
class Target:
    app: KeyholdServer
    base: str
    loop: asyncio.AbstractEventLoop


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    loop = asyncio.new_event_loop()
    path: Path = tmp_path_factory.mktemp("http-hostile")
    manager = running_server(settings_for(path, http_address="127.0.0.1:0"))
    app, _ = loop.run_until_complete(manager.__aenter__())
    try:
        yield Target(app, f"http://127.0.0.1:{app.http_port}", loop)
    finally:
        loop.run_until_complete(manager.__aexit__(None, None, None))
        loop.close()


async def _post(base: str, path: str, content: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base, timeout=20.0) as client:
        return await client.post(path, content=content, headers=headers)


async def _rows(app: KeyholdServer) -> dict[str, int]:
    counted = {}
    async with app.platform.database.engine.connect() as connection:
        for table in (tables.sessions, tables.service_accounts, tables.assertion_replays):
            counted[table.name] = int(
                await connection.scalar(select(func.count()).select_from(table)) or 0
            )
    return counted


@FUZZ
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    form=FORMS,
    authorization=AUTHORIZATION,
    content_type=CONTENT_TYPES,
)
def test_no_form_gets_a_server_error(
    target: Target,
    endpoint: str,
    form: dict[str, str],
    authorization: str | None,
    content_type: str,
) -> None:
    content = httpx.QueryParams(form).__str__().encode()
    headers = {"content-type": content_type} if content_type else {}
    if authorization is not None:
        headers["authorization"] = authorization
    before = target.loop.run_until_complete(_rows(target.app))
    answer = target.loop.run_until_complete(_post(target.base, endpoint, content, headers))
    assert answer.status_code < 500, answer.text
    if answer.status_code >= 400:
        assert answer.headers["content-type"].startswith("application/json")
        assert answer.json()["error"], answer.text
        assert target.loop.run_until_complete(_rows(target.app)) == before


@FUZZ
@given(content=st.binary(max_size=2048), content_type=CONTENT_TYPES)
def test_no_body_gets_a_server_error(target: Target, content: bytes, content_type: str) -> None:
    headers = {"content-type": content_type} if content_type else {}
    for endpoint in ENDPOINTS:
        answer = target.loop.run_until_complete(_post(target.base, endpoint, content, headers))
        assert answer.status_code < 500, answer.text
