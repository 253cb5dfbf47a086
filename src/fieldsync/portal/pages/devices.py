"""Devices: those that synced (all of them for administrators), and purging one."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import HTMLResponse, Response

from fieldsync.portal.web import (
    Posted,
    User,
    go,
    page_router,
    platform_of,
    profile_names,
    render,
)
from fieldsync.sync.devices import list_devices, purge_device

router = page_router()


@router.get("/devices")
def devices_page(request: Request, ctx: User) -> HTMLResponse:
    p = platform_of(request)
    return render(
        request,
        "devices.html",
        devices=list_devices(p.store, ctx),
        profiles=profile_names(p, ctx),
    )


@router.post("/devices/{device_id}/purge")
def purge(request: Request, device_id: str, ctx: User, form: Posted) -> Response:
    purge_device(platform_of(request).store, ctx, device_id)
    return go("/devices", "purged")
