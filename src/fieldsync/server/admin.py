"""Administration over HTTP that the Web API does not cover: refreshing a group team's
members from its external group (an identity provider's sync job calls this); the devices
(their inventory verdicts and receipts, the ones still holding data after access ended) and
remote wipe."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from fieldsync.errors import BadRequest, Forbidden, NotFound
from fieldsync.http.bodies import read_body
from fieldsync.http.principal import Principal, platform
from fieldsync.http.responses import JSON
from fieldsync.limits import parse_json
from fieldsync.sync.devices import list_devices, request_wipe
from fieldsync.sync.inventory import device_inventory
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


@router.get("/devices")
async def devices(request: Request, ctx: Principal, stranded: bool = False) -> JSON:
    """The devices the caller may see (administrators: all), with their inventory verdict and
    wipe state; ``stranded=true`` keeps the devices still holding data for a user or app
    that lost access (administrators only)."""
    if stranded:
        rows = await run_in_threadpool(request.app.state.sync.stranded, ctx)
        return JSON({"value": rows})
    found = await run_in_threadpool(list_devices, platform(request).store, ctx)
    return JSON({"value": [d.to_json() for d in found]})


@router.get("/devices/{device_id}")
async def device(request: Request, device_id: str, ctx: Principal) -> JSON:
    """One device: its registration, the last inventory of each table, its receipts."""

    def run() -> dict[str, object]:
        store = platform(request).store
        found = [d for d in list_devices(store, ctx) if d.device_id == device_id]
        if not found:
            raise NotFound(f"no device {device_id!r} that you can see")
        with store.read() as conn:
            tables = device_inventory(conn, device_id)
        return {
            **found[0].to_json(),
            "tables": tables,
            "receipts": request.app.state.sync.receipts(device_id),
        }

    return JSON(await run_in_threadpool(run))


@router.post("/devices/{device_id}/wipe")
async def wipe(request: Request, device_id: str, ctx: Principal) -> JSON:
    """Mark a device for remote wipe (administrators): its next contact wipes it."""
    if not ctx.unrestricted:
        raise Forbidden("only administrators wipe a device")
    await run_in_threadpool(request_wipe, platform(request).store, ctx, device_id)
    return JSON({"device": device_id, "wipe_pending": True})
