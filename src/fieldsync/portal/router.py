"""The maker portal under ``/portal``: server-rendered pages over the same services as the
API (records as the signed-in user, the offline API, the organisation, the sync service), so
every action is authorized and validated exactly as it is there. The portal adds no rules.

Each page (or group of pages) is a module of ``fieldsync.portal.pages`` with its own router;
this one mounts them under the prefix, the catch-all for unknown pages last. What they share
(the session, CSRF-checked forms, HTML error pages) is ``fieldsync.portal.web``.

Errors render as HTML pages (the API's are JSON); a request without a valid session is sent
to the sign-in page.
"""

from __future__ import annotations

from fastapi import APIRouter

from fieldsync.portal.pages import (
    apps,
    audit,
    devices,
    explain,
    preview,
    profiles,
    signin,
    static,
    sync_errors,
    tables,
)
from fieldsync.portal.web import PREFIX, PortalRoute, refusal

__all__ = ["PREFIX", "refusal", "router"]

PAGES = (signin, tables, apps, profiles, preview, sync_errors, devices, explain, audit, static)

router = APIRouter(route_class=PortalRoute, include_in_schema=False)
for page in PAGES:
    router.include_router(page.router, prefix=PREFIX)
router.include_router(static.unknown_router, prefix=PREFIX)  # last: any other address
