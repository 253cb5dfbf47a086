"""Apps: their offline settings and profile, and a profile generated from an app."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import HTMLResponse, Response

from fieldsync.offline.access import APP
from fieldsync.offline.profiles import PROFILE
from fieldsync.portal.web import (
    Posted,
    User,
    as_uuid,
    can,
    go,
    page_router,
    platform_of,
    profile_names,
    render,
)
from fieldsync.security.model import Privilege

router = page_router()


@router.get("/apps")
def apps_page(request: Request, ctx: User) -> HTMLResponse:
    p = platform_of(request)
    apps = p.records.retrieve_multiple(APP, order_by="name", caller=ctx)
    return render(request, "apps.html", apps=apps, profiles=profile_names(p, ctx))


@router.get("/apps/{app_id}")
def app_page(request: Request, app_id: str, ctx: User) -> HTMLResponse:
    p = platform_of(request)
    app = p.records.retrieve(APP, as_uuid(app_id, "app"), caller=ctx)
    return render(
        request,
        "app.html",
        app=app,
        profiles=profile_names(p, ctx),
        may_change=can(ctx, p, APP, Privilege.WRITE),
        may_generate=can(ctx, p, PROFILE, Privilege.CREATE),
    )


@router.post("/apps/{app_id}")
def save_app(request: Request, app_id: str, ctx: User, form: Posted) -> Response:
    p = platform_of(request)
    aid = as_uuid(app_id, "app")
    profile = form.get("profile")
    values = {
        "canbeusedoffline": form.flag("canbeusedoffline"),
        "mobileofflineprofileid": as_uuid(profile, "profile") if profile else None,
        "offlinemode": 1 if form.get("offlinemode") == "1" else 0,
        "offlineprofilemode": 1 if form.get("offlineprofilemode") == "1" else 0,
        "allowsyncfrequency": form.flag("allowsyncfrequency"),
        "allowwifionly": form.flag("allowwifionly"),
    }
    p.records.update(APP, aid, values, caller=ctx)
    return go(f"/apps/{aid}", "saved")


@router.post("/apps/{app_id}/generate")
def generate(request: Request, app_id: str, ctx: User, form: Posted) -> Response:
    p = platform_of(request)
    profile = p.offline.generate_profile(as_uuid(app_id, "app"), caller=ctx)
    return go(f"/profiles/{profile}", "generated")
