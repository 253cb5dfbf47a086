"""Signing in and out, and the portal's front door."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from fieldsync.errors import BadRequest, Unauthorized
from fieldsync.portal.session import Session
from fieldsync.portal.web import (
    PREFIX,
    Posted,
    User,
    current_session,
    go,
    page_router,
    platform_of,
    render,
)

router = page_router()


@router.get("/sign-in")
def sign_in_page(request: Request, next: str = "", ended: str = "") -> HTMLResponse:
    return render(request, "sign_in.html", next=safe_next(next), ended=bool(ended))


@router.post("/sign-in")
def sign_in(request: Request, form: Posted) -> Response:
    p = platform_of(request)
    address = request.client.host if request.client else ""
    username = form.get("username").strip()
    try:
        pair = p.auth.sign_in(username, form.get("password"), address)
    except (Unauthorized, BadRequest) as exc:
        return render(
            request,
            "sign_in.html",
            status=401 if isinstance(exc, Unauthorized) else 400,
            next=safe_next(form.get("next")),
            username=username,
            error=exc.message,
        )
    session = current_session(request) or Session.new()
    request.state.portal_session = session.signed_in(pair.access_token, pair.refresh_token)
    return RedirectResponse(safe_next(form.get("next")) or f"{PREFIX}/profiles", status_code=303)


def safe_next(target: str) -> str:
    """Only a portal path is a place to go back to after signing in."""
    if target.startswith(f"{PREFIX}/") and not target.startswith("//") and "\\" not in target:
        return target
    return ""


@router.post("/sign-out")
def sign_out(request: Request, form: Posted) -> Response:
    session = current_session(request)
    if session is not None and session.refresh:
        platform_of(request).auth.revoke(session.refresh)
    request.state.portal_session = Session.new()
    return go("/sign-in", "signed-out")


@router.get("")
@router.get("/")
def home(ctx: User) -> Response:
    return go("/profiles")
