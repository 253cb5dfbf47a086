"""Whatever a client sends, the server answers with a 2xx or a JSON 4xx, never a 500."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fieldsync.config import Settings
from fieldsync.platform import Platform
from fieldsync.server.app import create_app

PATHS = [
    "/health",
    "/auth/token",
    "/auth/revoke",
    "/auth/whoami",
    "/auth/api-tokens",
    "/auth/api-tokens/x",
    "/nowhere",
    "/auth/token/extra",
    "/%00",
    "/auth/../health",
]
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
CONTENT_TYPES = [
    "application/json",
    "application/x-www-form-urlencoded",
    "text/plain",
    "multipart/form-data; boundary=x",
    "",
    "application/json; charset=latin-1",
]

bodies = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    st.dictionaries(
        st.sampled_from(
            ["grant_type", "username", "password", "refresh_token", "token", "name", "days"]
        ),
        st.one_of(st.text(max_size=40), st.integers(), st.none(), st.lists(st.text())),
        max_size=5,
    ).map(lambda d: httpx.Request("POST", "/", json=d).content),
    st.sampled_from(
        [
            b"grant_type=password&username=admin&password=x",
            b"grant_type=refresh_token&refresh_token=fsr.zz.yy",
            b"grant_type=client_credentials",
            b"days=abc&name=" + b"n" * 300,
            b"token=" + b"A" * 5000,
            b"[]",
            b"null",
            b'{"username": []}',
        ]
    ),
)
auth_headers = st.sampled_from(
    [
        "",
        "Bearer",
        "Bearer x.y.z",
        "Basic Zm9vOmJhcg==",
        "Bearer fsk.00000000000000000000000000000000.x",
        "Bearer " + "a" * 3000,
        "bearer  fsr.1.2",
    ]
)


@pytest.fixture
def app_client(platform: Platform) -> httpx.AsyncClient:
    app = create_app(Settings(), platform=platform)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=st.sampled_from(METHODS),
    path=st.sampled_from(PATHS),
    body=bodies,
    content_type=st.sampled_from(CONTENT_TYPES),
    authorization=auth_headers,
)
def test_no_request_gets_a_500(
    app_client: httpx.AsyncClient,
    method: str,
    path: str,
    body: bytes,
    content_type: str,
    authorization: str,
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    if authorization:
        headers["authorization"] = authorization

    async def send() -> httpx.Response:
        return await app_client.request(method, path, content=body, headers=headers)

    response = asyncio.run(send())
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code >= 400 and method != "HEAD":
        error = response.json()["error"]
        assert isinstance(error["code"], str)
        assert isinstance(error["message"], str)
