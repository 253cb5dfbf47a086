"""Devices: those that synced (all of them for administrators) with their inventory verdict,
receipts and remote wipe; one device's last inventory per table; purging one, and (for
administrators) marking one for wipe. Administrators also see the devices still holding data
for a user or app that lost access."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import HTMLResponse, Response

from fieldsync.errors import NotFound
from fieldsync.portal.web import (
    Posted,
    User,
    go,
    page_router,
    platform_of,
    profile_names,
    render,
    sync_of,
)
from fieldsync.sync.devices import list_devices, purge_device, request_wipe
from fieldsync.sync.inventory import device_inventory

router = page_router()


@router.get("/devices")
def devices_page(request: Request, ctx: User) -> HTMLResponse:
    p = platform_of(request)
    stranded = sync_of(request).stranded(ctx) if ctx.unrestricted else []
    return render(
        request,
        "devices.html",
        devices=list_devices(p.store, ctx),
        profiles=profile_names(p, ctx),
        stranded=stranded,
    )


@router.get("/devices/{device_id}")
def device_page(request: Request, device_id: str, ctx: User) -> HTMLResponse:
    p = platform_of(request)
    found = [d for d in list_devices(p.store, ctx) if d.device_id == device_id]
    if not found:
        raise NotFound(f"no device {device_id!r} that you can see")
    with p.store.read() as conn:
        tables = device_inventory(conn, device_id)
    return render(
        request,
        "device.html",
        device=found[0],
        tables=tables,
        receipts=sync_of(request).receipts(device_id),
    )


@router.post("/devices/{device_id}/purge")
def purge(request: Request, device_id: str, ctx: User, form: Posted) -> Response:
    purge_device(platform_of(request).store, ctx, device_id)
    return go("/devices", "purged")


@router.post("/devices/{device_id}/wipe")
def wipe(request: Request, device_id: str, ctx: User, form: Posted) -> Response:
    request_wipe(platform_of(request).store, ctx, device_id)
    return go("/devices", "wipe")
