"""The maker portal under ``/portal``: server-rendered pages over the same services as the
API (records as the signed-in user, the offline API, the sync registry), so every action is
authorized and validated exactly as it is there. The portal adds no rules.

Errors render as HTML pages (the API's are JSON); a request without a valid session is sent
to the sign-in page.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Coroutine
from importlib import resources
from typing import Annotated, Any
from urllib.parse import quote

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import HTMLResponse, RedirectResponse, Response

from fieldsync.errors import (
    BadRequest,
    FieldsyncError,
    Forbidden,
    NotFound,
    ProfileInvalid,
    ServiceUnavailable,
    Unauthorized,
)
from fieldsync.http.bodies import read_body
from fieldsync.offline import apps as offline_apps
from fieldsync.offline.access import APP
from fieldsync.offline.profiles import ITEM, PROFILE, load_draft, load_items, write_draft
from fieldsync.offline.rules import TEAM_MEMBERSHIP, USER_MEMBERSHIP
from fieldsync.offline.snapshot import Distribution
from fieldsync.offline.tables import offline_tables
from fieldsync.offline.validation import ProfileDraft
from fieldsync.platform import Platform
from fieldsync.portal import editor
from fieldsync.portal.session import COOKIE, Form, Session, Signer, csrf_matches
from fieldsync.query.ast import Condition, Op, all_of
from fieldsync.schema.builtin import SYSTEM_USER_ID
from fieldsync.security.context import load_context
from fieldsync.security.model import Privilege, SecurityContext
from fieldsync.security.predicate import has_privilege
from fieldsync.store import audit
from fieldsync.sync.devices import list_devices, purge_device
from fieldsync.types import EntityRef, Row
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
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
NOTICES = {
    "saved": "Saved.",
    "published": "Published: devices get this version at their next sync.",
    "added": "Added.",
    "removed": "Removed.",
    "purged": "Device purged: its next sync registers it again and downloads everything anew.",
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


router = APIRouter(prefix=PREFIX, route_class=PortalRoute, include_in_schema=False)


# -- plumbing ---------------------------------------------------------------------------------


def platform_of(request: Request) -> Platform:
    found: Platform = request.app.state.platform
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


def can(ctx: SecurityContext, p: Platform, table: str, privilege: Privilege) -> bool:
    return has_privilege(ctx, p.store.schema.table(table), privilege)


def as_uuid(text: str, what: str) -> uuid.UUID:
    try:
        return parse_uuid(text)
    except ValueError:
        raise NotFound(f"no {what} {text!r}") from None


# -- sign-in ----------------------------------------------------------------------------------


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


# -- tables -----------------------------------------------------------------------------------


@router.get("/tables")
def tables_page(request: Request, ctx: User) -> HTMLResponse:
    return render(
        request,
        "tables.html",
        tables=offline_tables(platform_of(request).store),
        ownership=editor.OWNERSHIP_LABELS,
        may_change=ctx.unrestricted,
    )


@router.post("/tables/{name}")
def set_table(request: Request, name: str, ctx: User, form: Posted) -> Response:
    platform_of(request).offline.set_table_offline(name, form.flag("offline"), caller=ctx)
    return go("/tables", "saved", f"#table-{name}")


# -- apps -------------------------------------------------------------------------------------


def profile_names(p: Platform, ctx: SecurityContext) -> dict[uuid.UUID, str]:
    if not can(ctx, p, PROFILE, Privilege.READ):
        return {}
    rows = p.records.retrieve_multiple(
        PROFILE, columns=["mobileofflineprofileid", "name"], order_by="name", caller=ctx
    )
    return {r["mobileofflineprofileid"]: r["name"] for r in rows}


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


# -- profiles ---------------------------------------------------------------------------------


@router.get("/profiles")
def profiles_page(request: Request, ctx: User) -> HTMLResponse:
    p = platform_of(request)
    rows = p.records.retrieve_multiple(PROFILE, order_by="name", caller=ctx)
    return render(
        request,
        "profiles.html",
        profiles=rows,
        may_create=can(ctx, p, PROFILE, Privilege.CREATE),
    )


@router.post("/profiles")
def create_profile(request: Request, ctx: User, form: Posted) -> Response:
    p = platform_of(request)
    name = form.get("name").strip()
    if not name:
        raise BadRequest("a profile needs a name")
    values = {"name": name, "description": form.get("description").strip() or None}
    profile = p.records.create(PROFILE, values, caller=ctx)
    return go(f"/profiles/{profile}", "added")


def editor_page(
    request: Request,
    ctx: SecurityContext,
    profile_id: uuid.UUID,
    *,
    status: int = 200,
    edited: dict[str, Any] | None = None,
    errors: dict[str | None, list[str]] | None = None,
    publishing: bool = False,
) -> HTMLResponse:
    """The profile editor: the draft's items with their problems inline, the tables that can
    be added, the members, and the published version. ``edited`` holds a refused item as the
    maker submitted it, ``errors`` the refusal's messages by table (``None``: the profile)."""
    p = platform_of(request)
    store = p.store
    row = p.records.retrieve(PROFILE, profile_id, caller=ctx)  # authorizes reading the draft
    with store.read() as conn:
        draft = load_draft(conn, store, profile_id)
        item_ids = {
            i["selectedentitytypecode"]: i[f"{ITEM}id"]
            for i, _ in load_items(conn, store, profile_id)
        }
    shown = draft
    for item in (edited or {}).values():
        shown = editor.with_item(shown, item)
    schema = store.schema
    in_profile = {i.table for i in shown.items}
    published = p.offline.published_profile(profile_id)
    try:
        members = p.offline.members(profile_id, caller=ctx)
    except (Forbidden, NotFound):
        members = None
    may_members = can(ctx, p, USER_MEMBERSHIP, Privilege.CREATE) and can(
        ctx, p, TEAM_MEMBERSHIP, Privilege.CREATE
    )
    users = (
        {
            r["systemuserid"]: r
            for r in p.records.retrieve_multiple("systemuser", order_by="domainname", caller=ctx)
            if r["systemuserid"] != SYSTEM_USER_ID
        }
        if can(ctx, p, "systemuser", Privilege.READ)
        else {}
    )
    teams = (
        {r["teamid"]: r for r in p.records.retrieve_multiple("team", order_by="name", caller=ctx)}
        if can(ctx, p, "team", Privilege.READ)
        else {}
    )
    team_members: dict[uuid.UUID, list[str]] = {}
    if members is not None and members.teams:
        m = store.sql_table("teammembership")
        with store.read() as conn:
            for team_id, user_id in conn.execute(
                sa.select(m.c.teamid, m.c.systemuserid).where(m.c.teamid.in_(members.teams))
            ):
                name = users.get(user_id, {}).get("domainname") or str(user_id)
                team_members.setdefault(team_id, []).append(name)
    addable = [t for t in offline_tables(store) if t.offline and t.name not in in_profile]
    return render(
        request,
        "profile.html",
        status=status,
        profile=row,
        draft=shown,
        item_ids=item_ids,
        schema=schema,
        tables={i.table: schema.tables.get(i.table) for i in shown.items},
        problems=editor.problems_by_field(shown, schema, publishing=publishing),
        errors=errors or {},
        published=published,
        members=members,
        users=users,
        teams=teams,
        team_members=team_members,
        addable=addable,
        may_edit=can(ctx, p, PROFILE, Privilege.WRITE),
        may_members=may_members,
        editor=editor,
        Distribution=Distribution,
        apps=[
            a
            for a in p.records.retrieve_multiple(APP, order_by="name", caller=ctx)
            if a.get("mobileofflineprofileid") == profile_id
        ]
        if can(ctx, p, APP, Privilege.READ)
        else [],
    )


@router.get("/profiles/{profile_id}")
def profile_page(request: Request, profile_id: str, ctx: User) -> HTMLResponse:
    return editor_page(request, ctx, as_uuid(profile_id, "profile"))


def save_draft(
    request: Request,
    ctx: SecurityContext,
    pid: uuid.UUID,
    change: Callable[[ProfileDraft], ProfileDraft],
    *,
    table: str | None,
    edited: dict[str, Any] | None = None,
) -> Response | None:
    """Write the changed draft as the user; on a refusal, the editor again with the messages
    at the table (``None`` on success)."""
    p = platform_of(request)
    store = p.store
    p.records.retrieve(PROFILE, pid, columns=["name"], caller=ctx)
    try:
        store.transact(
            lambda conn: write_draft(
                p.records, conn, change(load_draft(conn, store, pid)), profile_id=pid, caller=ctx
            )
        )
    except (BadRequest, FieldsyncError) as exc:
        if exc.status >= 500 or isinstance(exc, (Forbidden, NotFound, Unauthorized)):
            raise
        messages = list(exc.problems) if isinstance(exc, ProfileInvalid) else [exc.message]
        return editor_page(request, ctx, pid, status=400, edited=edited, errors={table: messages})
    return None


@router.post("/profiles/{profile_id}/tables")
def add_table(request: Request, profile_id: str, ctx: User, form: Posted) -> Response:
    pid = as_uuid(profile_id, "profile")
    name = form.get("table")
    table = platform_of(request).store.schema.table(name)
    item = offline_apps.default_item(table)
    refused = save_draft(request, ctx, pid, lambda d: editor.with_item(d, item), table="__add__")
    return refused or go(f"/profiles/{pid}", "added", f"#item-{name}")


@router.post("/profiles/{profile_id}/tables/{name}")
def save_item(request: Request, profile_id: str, name: str, ctx: User, form: Posted) -> Response:
    p = platform_of(request)
    pid = as_uuid(profile_id, "profile")
    table = p.store.schema.table(name)
    p.records.retrieve(PROFILE, pid, columns=["name"], caller=ctx)
    with p.store.read() as conn:
        current = load_draft(conn, p.store, pid).item(name)
    if current is None:
        raise NotFound(f"table {name!r} is not in this profile")
    try:
        item = editor.item_from_form(table, form, current)
    except BadRequest as exc:
        return editor_page(request, ctx, pid, status=400, errors={name: [exc.message]})
    refused = save_draft(
        request, ctx, pid, lambda d: editor.with_item(d, item), table=name, edited={name: item}
    )
    return refused or go(f"/profiles/{pid}", "saved", f"#item-{name}")


@router.post("/profiles/{profile_id}/tables/{name}/remove")
def remove_item(request: Request, profile_id: str, name: str, ctx: User, form: Posted) -> Response:
    p = platform_of(request)
    pid = as_uuid(profile_id, "profile")
    p.records.retrieve(PROFILE, pid, columns=["name"], caller=ctx)

    def work(conn: sa.Connection) -> None:
        ids = {
            i["selectedentitytypecode"]: i[f"{ITEM}id"] for i, _ in load_items(conn, p.store, pid)
        }
        if name not in ids:
            raise NotFound(f"table {name!r} is not in this profile")
        p.records.delete(ITEM, ids[name], caller=ctx, conn=conn)

    p.store.transact(work)
    return go(f"/profiles/{pid}", "removed")


@router.post("/profiles/{profile_id}/publish")
def publish(request: Request, profile_id: str, ctx: User, form: Posted) -> Response:
    pid = as_uuid(profile_id, "profile")
    try:
        platform_of(request).offline.publish(pid, caller=ctx)
    except ProfileInvalid as exc:
        return editor_page(
            request, ctx, pid, status=400, errors={None: list(exc.problems)}, publishing=True
        )
    return go(f"/profiles/{pid}", "published")


@router.post("/profiles/{profile_id}/members")
def add_member(request: Request, profile_id: str, ctx: User, form: Posted) -> Response:
    p = platform_of(request)
    pid = as_uuid(profile_id, "profile")
    user, team = form.get("user"), form.get("team")
    if not user and not team:
        raise BadRequest("choose a user or a team to add")
    p.offline.add_members(
        pid,
        users=[as_uuid(user, "user")] if user else [],
        teams=[as_uuid(team, "team")] if team else [],
        caller=ctx,
    )
    return go(f"/profiles/{pid}", "added", "#members")


@router.post("/profiles/{profile_id}/members/remove")
def remove_member(request: Request, profile_id: str, ctx: User, form: Posted) -> Response:
    p = platform_of(request)
    pid = as_uuid(profile_id, "profile")
    user, team = form.get("user"), form.get("team")
    p.offline.remove_members(
        pid,
        users=[as_uuid(user, "user")] if user else [],
        teams=[as_uuid(team, "team")] if team else [],
        caller=ctx,
    )
    return go(f"/profiles/{pid}", "removed", "#members")


# -- sync errors and devices ------------------------------------------------------------------


def parse_time(text: str, what: str) -> dt.datetime | None:
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"{what}: {text!r} is not a date and time") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


@router.get("/sync-errors")
def sync_errors_page(
    request: Request,
    ctx: User,
    user: str = "",
    table: str = "",
    since: str = "",
    until: str = "",
) -> HTMLResponse:
    p = platform_of(request)
    where: dict[str, Any] = {}
    if user:
        where["ownerid"] = EntityRef("systemuser", as_uuid(user, "user"))
    if table:
        where["regardingobjecttypecode"] = table
    start, end = parse_time(since, "from"), parse_time(until, "to")
    conditions = []
    if start is not None:
        conditions.append(Condition("errortime", Op.GE, start))
    if end is not None:
        conditions.append(Condition("errortime", Op.LE, end))
    rows = p.records.retrieve_multiple(
        "syncerror", where=where, filter=all_of(conditions), order_by="errortime", caller=ctx
    )
    rows.reverse()
    for r in rows:
        r["ownerid"] = ref_id(r.get("ownerid"))
    try:
        users = {
            r["systemuserid"]: r["domainname"]
            for r in p.records.retrieve_multiple(
                "systemuser",
                columns=["systemuserid", "domainname"],
                order_by="domainname",
                caller=ctx,
            )
            if r["systemuserid"] != SYSTEM_USER_ID
        }
    except Forbidden:  # every user reads their own sync errors, whether or not they read users
        users = {ctx.user_id: ctx.username}
    return render(
        request,
        "sync_errors.html",
        errors=rows[:500],
        more=len(rows) > 500,
        users=users,
        tables=[t.name for t in offline_tables(p.store) if t.offline],
        chosen={"user": user, "table": table, "since": since, "until": until},
    )


@router.get("/sync-errors/{error_id}")
def sync_error_page(request: Request, error_id: str, ctx: User) -> HTMLResponse:
    p = platform_of(request)
    row = p.records.retrieve("syncerror", as_uuid(error_id, "sync error"), caller=ctx)
    owner = ref_id(row.get("ownerid"))
    owner_name = None
    if owner is not None:
        try:
            owner_name = p.records.retrieve(
                "systemuser", owner, columns=["domainname"], caller=ctx
            )["domainname"]
        except (NotFound, Forbidden):
            owner_name = None
    current: Row | None = None
    table = row.get("regardingobjecttypecode")
    if table and row.get("regardingobjectid") and table in p.store.schema:
        try:
            current = p.records.retrieve(table, row["regardingobjectid"], caller=ctx)
        except (NotFound, Forbidden):
            current = None
    return render(
        request,
        "sync_error.html",
        error=row,
        owner_name=owner_name,
        sent=pretty(row.get("requestdata")),
        current=current,
    )


def ref_id(value: Any) -> Any:
    """A lookup's id, whether the row holds the id or a reference."""
    return getattr(value, "id", value)


def pretty(text: str | None) -> str:
    if not text:
        return ""
    try:
        return json.dumps(json.loads(text), indent=2, sort_keys=True)
    except ValueError:
        return text


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


# -- the security audit log (administrators) --------------------------------------------------

AUDIT_PAGE_ROWS = 500


@router.get("/audit")
def audit_page(
    request: Request, ctx: User, event: str = "", user: str = "", since: str = ""
) -> HTMLResponse:
    if not ctx.unrestricted:
        raise Forbidden("only administrators read the audit log")
    log = platform_of(request).store.audit
    start = parse_time(since, "from")
    rows = log.read(since=start, event=event or None, user=user or None, limit=AUDIT_PAGE_ROWS + 1)
    return render(
        request,
        "audit.html",
        rows=rows[:AUDIT_PAGE_ROWS],
        more=len(rows) > AUDIT_PAGE_ROWS,
        limit=AUDIT_PAGE_ROWS,
        events=audit.EVENTS,
        chosen={"event": event, "user": user, "since": since},
    )


# -- static files and unknown pages -----------------------------------------------------------


@router.get("/static/{name}")
def static(name: str) -> Response:
    suffix = name[name.rfind(".") :] if "." in name else ""
    kind = STATIC_TYPES.get(suffix)
    files = resources.files("fieldsync.portal") / "static"
    if kind is None or "/" in name or name.startswith(".") or not (files / name).is_file():
        raise NotFound(f"no file {name!r}")
    return Response(
        (files / name).read_bytes(),
        media_type=kind,
        headers={"Cache-Control": "public, max-age=3600"},
    )


@router.api_route("/{rest:path}", methods=["GET", "POST"])
def unknown(rest: str) -> Response:
    raise NotFound(f"no page {PREFIX}/{rest}")
