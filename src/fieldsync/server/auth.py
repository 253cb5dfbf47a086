"""The sign-in endpoints under ``/auth``. The dependency that turns a bearer token into the
caller's security context lives in :mod:`fieldsync.http.principal` (endpoints never parse
tokens themselves)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from fieldsync.errors import BadRequest
from fieldsync.http.bodies import read_fields
from fieldsync.http.principal import Principal, platform
from fieldsync.http.responses import JSON
from fieldsync.schema.builtin import ORGANIZATION_ID
from fieldsync.types import as_uuid

MAX_TOKEN_DAYS = 3650

router = APIRouter(prefix="/auth", tags=["sign-in"])


@router.post("/token")
async def token(request: Request) -> JSON:
    """OAuth2 token endpoint: ``grant_type=password`` (username, password) or
    ``grant_type=refresh_token`` (refresh_token), form-encoded or JSON."""
    form = await read_fields(request)
    p = platform(request)
    grant = form.text("grant_type", "password")
    address = request.client.host if request.client else ""
    if grant == "password":
        pair = await run_in_threadpool(
            p.auth.sign_in, form.text("username"), form.text("password"), address
        )
    elif grant == "refresh_token":
        pair = await run_in_threadpool(p.auth.refresh, form.text("refresh_token"))
    else:
        raise BadRequest(f"unsupported grant_type {grant!r}: use password or refresh_token")
    return JSON(pair.to_json(), headers={"Cache-Control": "no-store"})


@router.post("/revoke")
async def revoke(request: Request) -> JSON:
    """Revoke a refresh token (its whole session), an access token's session, or an API
    token. Unknown tokens are accepted silently (RFC 7009)."""
    form = await read_fields(request)
    p = platform(request)
    await run_in_threadpool(p.auth.revoke, form.text("token"))
    return JSON({"revoked": True})


@router.get("/whoami")
def whoami(ctx: Principal) -> JSON:
    return JSON(
        {
            "UserId": str(ctx.user_id),
            "BusinessUnitId": str(ctx.business_unit_id),
            "OrganizationId": str(ORGANIZATION_ID),
            "username": ctx.username,
        }
    )


@router.post("/api-tokens")
async def create_api_token(request: Request, ctx: Principal) -> JSON:
    """A new API token: ``name``, and ``days`` it lasts (1 to 3650; without it, until
    revoked), form-encoded or JSON."""
    form = await read_fields(request)
    days = form.integer("days", 1, MAX_TOKEN_DAYS)
    name = form.text("name", "api")
    p = platform(request)
    token_id, secret = await run_in_threadpool(
        p.auth.create_api_token, ctx.user_id, name, days=days
    )
    return JSON({"id": str(token_id), "token": secret}, status_code=201)


@router.get("/api-tokens")
def list_api_tokens(request: Request, ctx: Principal) -> JSON:
    tokens: list[dict[str, Any]] = platform(request).auth.list_api_tokens(ctx.user_id)
    return JSON({"value": tokens})


@router.delete("/api-tokens/{token_id}")
def delete_api_token(request: Request, token_id: str, ctx: Principal) -> JSON:
    try:
        parsed = as_uuid(token_id)
    except ValueError:
        raise BadRequest(f"{token_id!r} is not a token id") from None
    platform(request).auth.revoke_api_token(ctx.user_id, parsed)
    return JSON({"revoked": True})
