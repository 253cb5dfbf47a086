"""The profile editor's **Preview**: what publishing the draft would do, per user who would
hold it (all of them, or a sample), next to the published version: rows and estimated bytes
per table, the rows moving onto and off each device, and the warnings against Dataverse's
guidance. Computed by ``fieldsync.sync.preview`` (as ``fieldsync profile preview`` and the
bound action ``PreviewMobileOfflineProfile``), with the same rule: previewing needs Read and
Write on the profile, and changes nothing."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import HTMLResponse

from fieldsync.errors import BadRequest, Forbidden, ProfileInvalid
from fieldsync.offline.profiles import PROFILE
from fieldsync.portal.web import Posted, User, as_uuid, can, page_router, platform_of, render
from fieldsync.security.model import Privilege
from fieldsync.sync.preview import SAMPLE_USERS, preview_profile

router = page_router()

MOST_SAMPLE = 10_000


@router.post("/profiles/{profile_id}/preview")
def preview(request: Request, profile_id: str, ctx: User, form: Posted) -> HTMLResponse:
    p = platform_of(request)
    pid = as_uuid(profile_id, "profile")
    row = p.records.retrieve(PROFILE, pid, caller=ctx)  # reading the draft is authorized
    if not can(ctx, p, PROFILE, Privilege.WRITE):
        raise Forbidden(f"previewing a profile needs Write on {PROFILE}")
    user = form.get("user").strip()
    users = [as_uuid(user, "user")] if user else None
    sample = _sample(form.get("sample").strip())
    try:
        result = preview_profile(p.records, pid, users=users, sample=sample, contexts=p.contexts)
    except ProfileInvalid as exc:
        return render(request, "preview.html", status=400, profile=row, problems=list(exc.problems))
    return render(request, "preview.html", profile=row, preview=result.to_json(), sample=sample)


def _sample(text: str) -> int:
    if not text:
        return SAMPLE_USERS
    if not text.isdigit() or not 1 <= int(text) <= MOST_SAMPLE:
        raise BadRequest(f"the sample is a whole number of users from 1 to {MOST_SAMPLE}")
    return int(text)
