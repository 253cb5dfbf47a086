"""The security audit log (administrators)."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import HTMLResponse

from fieldsync.errors import Forbidden
from fieldsync.portal.web import User, page_router, parse_time, platform_of, render
from fieldsync.store import audit

router = page_router()

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
