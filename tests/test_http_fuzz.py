"""Whatever a client sends, the server answers with a 2xx or a JSON 4xx, never a 500."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

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


PORTAL_PATHS = [
    "/",
    "/apps",
    "/apps/{id}",
    "/apps/{id}/generate",
    "/devices",
    "/devices/{id}/purge",
    "/profiles",
    "/profiles/{id}",
    "/profiles/{id}/members",
    "/profiles/{id}/members/remove",
    "/profiles/{id}/publish",
    "/profiles/{id}/tables",
    "/profiles/{id}/tables/{name}",
    "/profiles/{id}/tables/{name}/remove",
    "/sign-in",
    "/sign-out",
    "/static/{name}",
    "/sync-errors",
    "/sync-errors/{id}",
    "/tables",
    "/tables/{name}",
]


def _route_paths(app: Any) -> list[tuple[str, str]]:
    """Every operation of the app's OpenAPI description as (method, path), path parameters
    filled with samples (a GUID, a word, an entity set, an injection attempt)."""
    import re

    samples = ["00000000-0000-4000-8000-000000000001", "x", "accounts", "%27%20OR%201%3D1"]
    out: set[tuple[str, str]] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the Web API's catch-all route repeats an operation id
        described = app.openapi()["paths"]
    extra = {
        f"/api/data/v9.2/{tail}": {"get": {}, "post": {}, "patch": {}, "delete": {}}
        for tail in [
            "accounts",
            "accounts(00000000-0000-4000-8000-000000000001)",
            "accounts(name='x')",
            "EntityDefinitions",
            "EntityDefinitions(LogicalName='account')/Attributes",
            "$batch",
            "WhoAmI()",
            "accounts/Microsoft.Dynamics.CRM.CreateMultiple",
            "workorders(00000000-0000-4000-8000-000000000001)/servicereport/$value",
        ]
    }
    portal = {f"/portal{tail}": {"get": {}, "post": {}} for tail in PORTAL_PATHS}
    for path, operations in {**described, **extra, **portal}.items():
        for method in operations:
            for sample in samples if "{" in path else samples[:1]:
                out.add((method.upper(), re.sub(r"\{[^}]+\}", sample, path)))
    return sorted(out)


@pytest.fixture
def signed_in(platform: Platform) -> tuple[httpx.AsyncClient, list[str], list[tuple[str, str]]]:
    from fieldsync.security.roles import BASIC_USER, SYSTEM_ADMINISTRATOR

    org = platform.org
    org.user("fuzzadmin", password="fuzz password 1", roles=[org.role_id(SYSTEM_ADMINISTRATOR)])
    org.user("fuzzuser", password="fuzz password 2", roles=[org.role_id(BASIC_USER)])
    tokens = [
        platform.auth.sign_in("fuzzadmin", "fuzz password 1", "").access_token,
        platform.auth.sign_in("fuzzuser", "fuzz password 2", "").access_token,
    ]
    app = create_app(Settings(), platform=platform)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    return client, tokens, _route_paths(app)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), body=bodies, content_type=st.sampled_from(CONTENT_TYPES))
def test_no_route_gets_a_500_when_signed_in(
    signed_in: tuple[httpx.AsyncClient, list[str], list[tuple[str, str]]],
    data: st.DataObject,
    body: bytes,
    content_type: str,
) -> None:
    client, tokens, routes = signed_in
    method, path = data.draw(st.sampled_from(routes), label="route")
    query = data.draw(
        st.sampled_from(
            [
                "",
                "?$filter=name eq 'a'",
                "?$top=-1",
                "?$select=nosuch",
                "?fetchXml=<fetch",
                "?app=fieldservice",
                "?since=yesterday",
                "?$skiptoken=zz",
            ]
        ),
        label="query",
    )
    headers = {"authorization": f"Bearer {data.draw(st.sampled_from(tokens), label='who')}"}
    if content_type:
        headers["content-type"] = content_type

    async def send() -> httpx.Response:
        return await client.request(method, path + query, content=body, headers=headers)

    response = asyncio.run(send())
    # 501 is Dataverse's clear answer for an operation fieldsync does not serve
    assert response.status_code < 500 or response.status_code == 501, (
        method,
        path,
        response.status_code,
        response.text[:300],
    )
