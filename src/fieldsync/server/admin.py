"""Administration over HTTP that the Web API does not cover: refreshing a group team's
members from its external group (an identity provider's sync job calls this)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from fieldsync.errors import BadRequest
from fieldsync.http.bodies import read_body
from fieldsync.http.principal import Principal, platform
from fieldsync.http.responses import JSON
from fieldsync.limits import parse_json
from fieldsync.types import as_uuid

router = APIRouter(prefix="/admin", tags=["administration"])


@router.put("/teams/{team_id}/group-members")
async def refresh_group_members(request: Request, team_id: str, ctx: Principal) -> JSON:
    """Make a group team's members exactly the user names in the body,
    ``{"usernames": ["ann", "bob"]}``. Unknown names change nothing and answer 404; the
    caller needs the right to change the team's memberships."""
    try:
        team = as_uuid(team_id)
    except ValueError:
        raise BadRequest(f"{team_id!r} is not a team id") from None
    body = await read_body(request)
    try:
        data = parse_json(body or b"null")
    except BadRequest as exc:
        raise BadRequest(f'the body must be JSON: {{"usernames": [...]}} ({exc.message})') from None
    names = data.get("usernames") if isinstance(data, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise BadRequest('the body must be JSON: {"usernames": [...]}')
    org = platform(request).org
    added, removed = await run_in_threadpool(org.refresh_group, team, names, caller=ctx)
    return JSON({"added": added, "removed": removed})
