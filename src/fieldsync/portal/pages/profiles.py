"""Mobile configuration: the profiles, and the profile editor (the draft's items, publishing,
and the users and teams that hold the profile)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from fastapi import Request
from starlette.responses import HTMLResponse, Response

from fieldsync.errors import (
    BadRequest,
    FieldsyncError,
    Forbidden,
    NotFound,
    ProfileInvalid,
    Unauthorized,
)
from fieldsync.offline import apps as offline_apps
from fieldsync.offline.access import APP
from fieldsync.offline.profiles import PROFILE
from fieldsync.offline.rules import TEAM_MEMBERSHIP, USER_MEMBERSHIP
from fieldsync.offline.snapshot import Distribution
from fieldsync.offline.tables import offline_tables
from fieldsync.offline.validation import ProfileDraft
from fieldsync.portal import editor
from fieldsync.portal.web import (
    Posted,
    User,
    as_uuid,
    can,
    go,
    page_router,
    platform_of,
    render,
)
from fieldsync.schema.builtin import SYSTEM_USER_ID
from fieldsync.security.model import Privilege, SecurityContext

router = page_router()


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
    draft = p.offline.draft(profile_id, caller=ctx)
    item_ids = p.offline.draft_item_ids(profile_id)
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
        for team_id, user_ids in p.org.team_members(members.teams).items():
            team_members[team_id] = [
                users.get(user_id, {}).get("domainname") or str(user_id) for user_id in user_ids
            ]
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
    try:
        platform_of(request).offline.change_draft(pid, change, caller=ctx)
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
    current = p.offline.draft(pid, caller=ctx).item(name)
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
    pid = as_uuid(profile_id, "profile")
    platform_of(request).offline.remove_draft_item(pid, name, caller=ctx)
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
