"""Sync errors: the changes devices sent that the server refused, and one in detail."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from starlette.responses import HTMLResponse

from fieldsync.errors import Forbidden, NotFound
from fieldsync.offline.tables import offline_tables
from fieldsync.portal.web import User, as_uuid, page_router, parse_time, platform_of, ref_id, render
from fieldsync.query.ast import Condition, Op, all_of
from fieldsync.schema.builtin import SYSTEM_USER_ID
from fieldsync.types import EntityRef, Row

router = page_router()


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
        owner=owner,
        owner_name=owner_name,
        sent=pretty(row.get("requestdata")),
        current=current,
    )


def pretty(text: str | None) -> str:
    if not text:
        return ""
    try:
        return json.dumps(json.loads(text), indent=2, sort_keys=True)
    except ValueError:
        return text
