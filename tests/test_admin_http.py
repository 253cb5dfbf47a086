"""Refreshing a group team's members over HTTP, as an identity provider's sync job would."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from fieldsync.config import Settings
from fieldsync.platform import Platform
from fieldsync.security.roles import BASIC_USER, SYSTEM_ADMINISTRATOR
from fieldsync.server.app import create_app


@pytest.fixture
async def client(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(), platform=platform)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as c:
        yield c


def token(platform: Platform, username: str) -> dict[str, str]:
    _, secret = platform.auth.create_api_token(platform.org.user_id(username), "test")
    return {"Authorization": f"Bearer {secret}"}


@pytest.mark.anyio
async def test_group_members_follow_the_posted_list(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    org = platform.org
    org.user("idp", roles=[org.role_id(SYSTEM_ADMINISTRATOR)])
    org.user("clerk", roles=[org.role_id(BASIC_USER)])
    for name in ("ann", "bob", "cy"):
        org.user(name)
    group = org.team("Engineers", kind="group")
    url = f"/admin/teams/{group}/group-members"
    r = await client.put(url, json={"usernames": ["ann", "bob"]}, headers=token(platform, "idp"))
    assert r.json() == {"added": 2, "removed": 0}
    r = await client.put(url, json={"usernames": ["bob", "cy"]}, headers=token(platform, "idp"))
    assert r.json() == {"added": 1, "removed": 1}
    assert org.members(group) == {org.user_id("bob"), org.user_id("cy")}

    for body, status in [
        ({"usernames": ["bob", "ghost"]}, 404),
        ({"usernames": "bob"}, 400),
        ({}, 400),
        (None, 400),
    ]:
        r = await client.put(url, json=body, headers=token(platform, "idp"))
        assert r.status_code == status, body
    r = await client.put(url, json={"usernames": ["ann"]}, headers=token(platform, "clerk"))
    assert r.status_code == 403
    r = await client.put(url, json={"usernames": ["ann"]})
    assert r.status_code == 401
    assert org.members(group) == {org.user_id("bob"), org.user_id("cy")}
    r = await client.put(
        "/admin/teams/not-a-guid/group-members",
        json={"usernames": []},
        headers=token(platform, "idp"),
    )
    assert r.status_code == 400
