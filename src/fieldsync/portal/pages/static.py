"""The portal's style sheet and script, and the page for any address the portal does not
have (mounted last)."""

from __future__ import annotations

from importlib import resources

from starlette.responses import Response

from fieldsync.errors import NotFound
from fieldsync.portal.web import PREFIX, page_router

STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}

router = page_router()
unknown_router = page_router()


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


@unknown_router.api_route("/{rest:path}", methods=["GET", "POST"])
def unknown(rest: str) -> Response:
    raise NotFound(f"no page {PREFIX}/{rest}")
