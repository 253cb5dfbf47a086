"""Why is this row (not) on this device: the sync service's explanation (``/sync/v1/explain``,
``fieldsync scope explain``) as a page. Reached from a device, from a user of a profile, from
a profile and from a sync error, with the form filled in from there.

The service's rules apply as they are: only administrators ask about another user, and a row
the asker may not read is explained only to an administrator (to anyone else it is not
found, like a missing one)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from starlette.responses import HTMLResponse

from fieldsync.errors import FieldsyncError, Forbidden, NotFound, Unauthorized
from fieldsync.offline.access import APP
from fieldsync.offline.tables import offline_tables
from fieldsync.portal.web import (
    Posted,
    User,
    as_uuid,
    can,
    page_router,
    platform_of,
    render,
    sync_of,
)
from fieldsync.schema.builtin import SYSTEM_USER_ID
from fieldsync.security.context import load_context
from fieldsync.security.model import Privilege, SecurityContext

router = page_router()

FIELDS = ("app", "table", "id", "user")
OTHERS = "only administrators explain another user's device"


def explain_page(
    request: Request,
    ctx: SecurityContext,
    chosen: dict[str, str],
    *,
    answer: dict[str, Any] | None = None,
    error: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    p = platform_of(request)
    apps = (
        [
            a
            for a in p.records.retrieve_multiple(APP, order_by="name", caller=ctx)
            if a.get("uniquename")
        ]
        if can(ctx, p, APP, Privilege.READ)
        else []
    )
    users = (
        {
            str(r["systemuserid"]): r["domainname"]
            for r in p.records.retrieve_multiple(
                "systemuser",
                columns=["systemuserid", "domainname"],
                order_by="domainname",
                caller=ctx,
            )
            if r["systemuserid"] != SYSTEM_USER_ID
        }
        if ctx.unrestricted
        else {}
    )
    return render(
        request,
        "explain.html",
        status=status,
        chosen=chosen,
        apps=apps,
        tables=[t for t in offline_tables(p.store) if t.offline],
        users=users,
        answer=answer,
        error=error,
    )


@router.get("/explain")
def explain_form(
    request: Request,
    ctx: User,
    app: str = "",
    table: str = "",
    id: str = "",
    user: str = "",
) -> HTMLResponse:
    """The form, filled in from the page that links here (nothing is explained by a link:
    the form posts, with its CSRF token)."""
    chosen = {"app": app, "table": table, "id": id, "user": user or str(ctx.user_id)}
    return explain_page(request, ctx, chosen)


@router.post("/explain")
def explain(request: Request, ctx: User, form: Posted) -> HTMLResponse:
    chosen = {name: form.get(name).strip() for name in FIELDS}
    chosen["user"] = chosen["user"] or str(ctx.user_id)
    try:
        target = _target(request, ctx, chosen["user"])
        answer = sync_of(request).explain(
            ctx, app=chosen["app"], table=chosen["table"], record_id=chosen["id"], user=target
        )
    except FieldsyncError as exc:
        if exc.status >= 500 or isinstance(exc, Unauthorized):
            raise
        return explain_page(request, ctx, chosen, error=exc.message, status=exc.status)
    names = {str(ctx.user_id): ctx.username}
    if target is not None:
        names[str(target.user_id)] = target.username
    answer["username"] = names.get(answer["user"], answer["user"])
    return explain_page(request, ctx, chosen, answer=answer)


def _target(request: Request, ctx: SecurityContext, user: str) -> SecurityContext | None:
    """The user whose device is asked about (``None``: the asker)."""
    uid = as_uuid(user, "user")
    if uid == ctx.user_id:
        return None
    if not ctx.unrestricted:
        raise Forbidden(OTHERS)
    try:
        return load_context(platform_of(request).store, uid)
    except Unauthorized:  # a disabled or missing user holds nothing; the asker stays signed in
        raise NotFound(f"no enabled user {uid}") from None
