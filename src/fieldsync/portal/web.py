"""What every portal page shares: the route class that renders errors as HTML pages and sets
the session cookie and security headers, the signed-in user, CSRF-checked forms, templates,
redirects and small parsers. The pages (``fieldsync.portal.pages``) add no rules of their own:
they call the same services as the API."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Coroutine
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import HTMLResponse, RedirectResponse, Response

from fieldsync import tracing
from fieldsync.errors import (
    BadRequest,
    FieldsyncError,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
)
from fieldsync.http.bodies import read_body
from fieldsync.offline.profiles import PROFILE
from fieldsync.platform import Platform
from fieldsync.portal.session import COOKIE, Form, Session, Signer, csrf_matches
from fieldsync.security.context import load_context
from fieldsync.security.model import Privilege, SecurityContext
from fieldsync.security.predicate import has_privilege
from fieldsync.sync.service import SyncService
from fieldsync.types import as_uuid as parse_uuid

PREFIX = "/portal"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
NOTICES = {
    "saved": "Saved.",
    "published": "Published: devices get this version at their next sync.",
    "added": "Added.",
    "removed": "Removed.",
    "purged": "Device purged: its next sync registers it again and downloads everything anew.",
    "wipe": "Wipe pending: the device removes everything at its next contact and says so.",
    "generated": "Generated from the app's tables and views: review the filters, then publish.",
    "signed-out": "You are signed out.",
}

templates = Environment(
    loader=PackageLoader("fieldsync.portal", "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


class SignInRequired(Exception):
    """No session: the sign-in page, then back."""


class PortalRoute(APIRoute):
    """Every portal response: errors as HTML pages, the session cookie when it changed,
    and the security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def portal_handler(request: Request) -> Response:
            try:
                response = await handler(request)
            except (SignInRequired, Unauthorized) as exc:
                query = f"?{request.url.query}" if request.url.query else ""
                back = request.url.path + query if request.method == "GET" else ""
                ended = "&ended=1" if isinstance(exc, Unauthorized) else ""
                response = RedirectResponse(
                    f"{PREFIX}/sign-in?next={quote(back)}{ended}", status_code=303
                )
                response.delete_cookie(COOKIE, path=PREFIX)
            except FieldsyncError as exc:
                response = error_page(request, exc.status, exc.message)
                if isinstance(exc, ServiceUnavailable):
                    response.headers["Retry-After"] = str(exc.retry_after)
            except RequestValidationError:
                response = error_page(request, 400, "the request is not one the portal sends")
            except StarletteHTTPException as exc:
                response = error_page(request, exc.status_code, str(exc.detail))
            return finish(request, response)

        return portal_handler


def page_router() -> APIRouter:
    """The router of one page (or group of pages); ``fieldsync.portal.router`` mounts it."""
    return APIRouter(route_class=PortalRoute, include_in_schema=False)


def finish(request: Request, response: Response) -> Response:
    """The session cookie when it changed, and the security headers."""
    fresh: Session | None = getattr(request.state, "portal_session", None)
    if fresh is not None and COOKIE not in response.headers.get("set-cookie", ""):
        set_session(request, response, fresh)
    for key, value in SECURITY_HEADERS.items():
        response.headers.setdefault(key, value)
    return response


def refusal(request: Request, status: int, message: str) -> Response:
    """An error page for a request refused before it reached a portal route (a body past
    its limit)."""
    return finish(request, error_page(request, status, message))


# -- the platform, the session and the signed-in user -----------------------------------------


def platform_of(request: Request) -> Platform:
    found: Platform = request.app.state.platform
    return found


def sync_of(request: Request) -> SyncService:
    """The server's sync service (its plan cache), or one over the platform's records."""
    found: SyncService | None = getattr(request.app.state, "sync", None)
    if found is None:
        found = SyncService(platform_of(request).records)
        request.app.state.sync = found
    return found


def signer_of(request: Request) -> Signer:
    signer: Signer | None = getattr(request.app.state, "portal_signer", None)
    if signer is None:
        p = platform_of(request)
        secret = p.store.meta("token_secret") or request.app.state.settings.secret_key
        signer = Signer(secret)
        request.app.state.portal_signer = signer
    return signer


def current_session(request: Request) -> Session | None:
    fresh: Session | None = getattr(request.state, "portal_session", None)
    return fresh or signer_of(request).load(request.cookies.get(COOKIE))


def set_session(request: Request, response: Response, session: Session) -> None:
    response.set_cookie(
        COOKIE,
        signer_of(request).dump(session),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=PREFIX,
    )


def signed_in(request: Request) -> SecurityContext:
    """The signed-in user's security context. The session's access token is checked like
    any bearer token; an expired one is refreshed with the session's refresh token."""
    session = current_session(request)
    if session is None or not session.access:
        raise SignInRequired()
    p = platform_of(request)
    try:
        user_id = p.auth.authenticate(session.access)
    except Unauthorized as exc:
        if "expired" not in exc.message or not session.refresh:
            raise
        pair = p.auth.refresh(session.refresh)
        request.state.portal_session = session.with_tokens(pair.access_token, pair.refresh_token)
        user_id = pair.user_id
    ctx = load_context(p.store, user_id)
    request.state.principal = ctx
    tracing.annotate({"enduser.id": str(user_id)})
    return ctx


async def posted(request: Request) -> Form:
    """The posted form, once its CSRF token matches the session's."""
    body = await read_body(request)  # held to FIELDSYNC_MAX_FORM_KB (fieldsync.http.bodies)
    try:
        form = Form.parse(body)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the form could not be read") from None
    if not csrf_matches(current_session(request), form):
        raise Forbidden(
            "this form is out of date or did not come from the portal: reload the page and "
            "try again"
        )
    return form


User = Annotated[SecurityContext, Depends(signed_in)]
Posted = Annotated[Form, Depends(posted)]


# -- rendering --------------------------------------------------------------------------------


def render(request: Request, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    session = current_session(request)
    if session is None:
        session = Session.new()
        request.state.portal_session = session
    ctx: SecurityContext | None = getattr(request.state, "principal", None)
    notice = NOTICES.get(request.query_params.get("notice", ""))
    html = templates.get_template(template).render(
        prefix=PREFIX,
        csrf=session.csrf,
        me=ctx,
        path=request.url.path,
        notice=notice,
        **context,
    )
    return HTMLResponse(html, status_code=status)


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    return render(request, "error.html", status=status, status_code=status, message=message)


def go(path: str, notice: str | None = None, anchor: str = "") -> RedirectResponse:
    query = f"?notice={notice}" if notice else ""
    return RedirectResponse(f"{PREFIX}{path}{query}{anchor}", status_code=303)


# -- small helpers ----------------------------------------------------------------------------


def can(ctx: SecurityContext, p: Platform, table: str, privilege: Privilege) -> bool:
    return has_privilege(ctx, p.store.schema.table(table), privilege)


def as_uuid(text: str, what: str) -> uuid.UUID:
    """An id from the page's address or form; a malformed one names nothing there."""
    try:
        return parse_uuid(text)
    except ValueError:
        raise NotFound(f"no {what} {text!r}") from None


def parse_time(text: str, what: str) -> dt.datetime | None:
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"{what}: {text!r} is not a date and time") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def ref_id(value: Any) -> Any:
    """A lookup's id, whether the row holds the id or a reference."""
    return getattr(value, "id", value)


def profile_names(p: Platform, ctx: SecurityContext) -> dict[uuid.UUID, str]:
    """The profiles the user may read, by id (empty without Read on profiles)."""
    if not can(ctx, p, PROFILE, Privilege.READ):
        return {}
    rows = p.records.retrieve_multiple(
        PROFILE, columns=["mobileofflineprofileid", "name"], order_by="name", caller=ctx
    )
    return {r["mobileofflineprofileid"]: r["name"] for r in rows}
