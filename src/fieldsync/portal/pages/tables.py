"""Tables: which can be taken offline."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import HTMLResponse, Response

from fieldsync.offline.tables import offline_tables
from fieldsync.portal import editor
from fieldsync.portal.web import Posted, User, go, page_router, platform_of, render

router = page_router()


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
