"""Sign-in over HTTP and the attacks on it: other users' tokens, disabled users, revoked,
expired, forged and reused tokens, brute force."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import jwt
import pytest

from fieldsync.config import Settings
from fieldsync.platform import Platform
from fieldsync.security.roles import BASIC_USER
from fieldsync.server.app import create_app

PASSWORD = "correct horse battery"


@pytest.fixture
async def client(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    org = platform.org
    basic = org.role_id(BASIC_USER)
    org.user("ann", password=PASSWORD, roles=[basic])
    org.user("bob", password=PASSWORD, roles=[basic])
    app = create_app(Settings(), platform=platform)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


async def sign_in(client: httpx.AsyncClient, user: str = "ann") -> dict[str, str]:
    r = await client.post(
        "/auth/token", data={"grant_type": "password", "username": user, "password": PASSWORD}
    )
    assert r.status_code == 200, r.text
    body: dict[str, str] = r.json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.anyio
async def test_password_sign_in_gives_working_tokens(client: httpx.AsyncClient) -> None:
    tokens = await sign_in(client)
    assert tokens["token_type"] == "Bearer"
    r = await client.get("/auth/whoami", headers=bearer(tokens["access_token"]))
    assert r.status_code == 200
    assert r.json()["username"] == "ann"


@pytest.mark.anyio
async def test_json_sign_in_and_case_insensitive_user_name(client: httpx.AsyncClient) -> None:
    r = await client.post("/auth/token", json={"username": "ANN", "password": PASSWORD})
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("username", "password"), [("ann", "wrong password"), ("nobody", PASSWORD), ("", "")]
)
async def test_bad_credentials_are_refused_alike(
    client: httpx.AsyncClient, username: str, password: str
) -> None:
    r = await client.post("/auth/token", data={"username": username, "password": password})
    assert r.status_code in (400, 401)
    assert set(r.json()["error"]) == {"code", "message"}
    if username:
        assert r.json()["error"]["message"] == "invalid username or password"


@pytest.mark.anyio
async def test_an_overlong_user_name_or_password_is_a_clear_400(client: httpx.AsyncClient) -> None:
    # PostgreSQL once answered 500 here: the failed sign-in's user name did not fit its column
    for username, password in (("x" * 5000, PASSWORD), ("ann", "y" * 5000)):
        r = await client.post("/auth/token", data={"username": username, "password": password})
        assert r.status_code == 400
        assert "at most 1024 characters" in r.json()["error"]["message"]


@pytest.mark.anyio
async def test_every_endpoint_but_health_and_sign_in_needs_a_token(
    client: httpx.AsyncClient,
) -> None:
    for method, path in [
        ("GET", "/auth/whoami"),
        ("GET", "/auth/api-tokens"),
        ("POST", "/auth/api-tokens"),
        ("DELETE", f"/auth/api-tokens/{uuid.uuid4()}"),
    ]:
        r = await client.request(method, path)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert (await client.get("/health")).status_code == 200


@pytest.mark.anyio
@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer    ",
        "Basic YW5uOnB3",
        "Bearer not-a-token",
        "Bearer fsk.zz.yy",
        "Bearer fsr.00000000000000000000000000000000.x",
    ],
)
async def test_garbage_tokens_are_refused(client: httpx.AsyncClient, header: str) -> None:
    r = await client.get("/auth/whoami", headers={"Authorization": header})
    assert r.status_code == 401


@pytest.mark.anyio
async def test_forged_and_expired_access_tokens_are_refused(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    tokens = await sign_in(client)
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    forged = jwt.encode(
        {**claims, "sub": str(platform.org.user_id("bob"))}, "x" * 48, algorithm="HS256"
    )
    assert (await client.get("/auth/whoami", headers=bearer(forged))).status_code == 401
    unsigned = jwt.encode(claims, None, algorithm="none")
    assert (await client.get("/auth/whoami", headers=bearer(unsigned))).status_code == 401
    secret = platform.store.meta("token_secret")
    expired = jwt.encode({**claims, "exp": int(time.time()) - 5}, secret, algorithm="HS256")
    r = await client.get("/auth/whoami", headers=bearer(expired))
    assert r.status_code == 401
    assert "expired" in r.json()["error"]["message"]


@pytest.mark.anyio
async def test_refresh_rotates_and_reuse_revokes_the_session(client: httpx.AsyncClient) -> None:
    first = await sign_in(client)
    r = await client.post(
        "/auth/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    )
    assert r.status_code == 200
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert (
        await client.get("/auth/whoami", headers=bearer(second["access_token"]))
    ).status_code == 200
    r = await client.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": second["refresh_token"]},
    )
    assert r.status_code == 200
    third = r.json()
    # the first token is two rotations old: no grace period covers it (the token rotated
    # last is covered for a few seconds: tests/test_privileges_attacks.py)
    reuse = await client.post(
        "/auth/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    )
    assert reuse.status_code == 401
    # the thief's reuse revoked the whole session: the legitimate tokens stop working too
    assert (
        await client.get("/auth/whoami", headers=bearer(third["access_token"]))
    ).status_code == 401
    again = await client.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": third["refresh_token"]},
    )
    assert again.status_code == 401


@pytest.mark.anyio
async def test_revoking_a_refresh_token_ends_its_access_tokens_at_once(
    client: httpx.AsyncClient,
) -> None:
    tokens = await sign_in(client)
    other = await sign_in(client)
    r = await client.post("/auth/revoke", data={"token": tokens["refresh_token"]})
    assert r.status_code == 200
    assert (
        await client.get("/auth/whoami", headers=bearer(tokens["access_token"]))
    ).status_code == 401
    # another session of the same user is untouched
    assert (
        await client.get("/auth/whoami", headers=bearer(other["access_token"]))
    ).status_code == 200
    assert (await client.post("/auth/revoke", data={"token": "nonsense"})).status_code == 200


@pytest.mark.anyio
async def test_disabled_user_is_refused_at_once_whatever_the_token(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    tokens = await sign_in(client)
    _, api_token = platform.auth.create_api_token(platform.org.user_id("ann"), "script")
    assert (await client.get("/auth/whoami", headers=bearer(api_token))).status_code == 200
    platform.org.set_user_enabled(platform.org.user_id("ann"), False)
    for token in (tokens["access_token"], api_token):
        assert (await client.get("/auth/whoami", headers=bearer(token))).status_code == 401
    r = await client.post("/auth/token", data={"username": "ann", "password": PASSWORD})
    assert r.status_code == 401
    r = await client.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
    )
    assert r.status_code == 401


@pytest.mark.anyio
async def test_api_tokens_create_list_revoke(client: httpx.AsyncClient) -> None:
    tokens = await sign_in(client)
    r = await client.post(
        "/auth/api-tokens",
        headers=bearer(tokens["access_token"]),
        data={"name": "nightly import", "days": "30"},
    )
    assert r.status_code == 201
    created = r.json()
    assert (await client.get("/auth/whoami", headers=bearer(created["token"]))).json()[
        "username"
    ] == "ann"
    listed = (await client.get("/auth/api-tokens", headers=bearer(tokens["access_token"]))).json()
    assert [t["name"] for t in listed["value"]] == ["nightly import"]
    assert "token" not in listed["value"][0]
    assert "tokenhash" not in listed["value"][0]
    bob = await sign_in(client, "bob")
    r = await client.delete(
        f"/auth/api-tokens/{created['id']}", headers=bearer(bob["access_token"])
    )
    assert r.status_code == 404  # bob cannot revoke ann's token
    r = await client.delete(
        f"/auth/api-tokens/{created['id']}", headers=bearer(tokens["access_token"])
    )
    assert r.status_code == 200
    assert (await client.get("/auth/whoami", headers=bearer(created["token"]))).status_code == 401


@pytest.mark.anyio
async def test_failed_sign_ins_are_rate_limited(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    limit = platform.auth.settings.max_failures
    for _ in range(limit):
        r = await client.post("/auth/token", data={"username": "bob", "password": "guess-guess"})
        assert r.status_code == 401
    r = await client.post("/auth/token", data={"username": "bob", "password": PASSWORD})
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) > 0
    # other users are not locked out by bob's attacker
    assert (
        await client.post("/auth/token", data={"username": "ann", "password": PASSWORD})
    ).status_code == 200


def test_short_passwords_are_refused(platform: Platform) -> None:
    from fieldsync.errors import BadRequest

    with pytest.raises(BadRequest, match="password"):
        platform.org.user("carl", password="short")
    with pytest.raises(Exception, match="no user named"):
        platform.org.user_id("carl")  # nothing was created


def test_a_weak_signing_key_is_refused(platform: Platform) -> None:
    from fieldsync.errors import BadRequest
    from fieldsync.identity.auth import Authenticator

    with pytest.raises(BadRequest, match="signing key"):
        Authenticator(platform.store, replace(platform.auth.settings, secret_key="short"))
